// Smoke checks of the flip gate: each check is sent to the gateway's own
// public listener with a per-process secret header that pins the color, so it
// crosses the same routing and forwarding code as real traffic.

import { randomBytes, timingSafeEqual } from 'node:crypto'
import { request, type Dispatcher } from 'undici'
import type { Color, ServiceConfig, SmokeCheck } from '../config/schema.js'
import { PIN_HEADER } from '../proxy/headers.js'


export interface SmokeFailure {
  service: string
  color: Color
  check: string
  reason: string
  expectStatus: number
  status?: number
}

export class SmokeRunner {
  /** `PIN_HEADER` values (the proxy's own pin header, which it never forwards): secret + ' ' + color. Only this process (and its workers) know the secret. */
  readonly secret: string
  private readonly secretBytes: Buffer
  private readonly origin: () => string
  private readonly dispatcher: Dispatcher | undefined

  /**
   * `origin` gives the public listener's loopback-reachable origin (known
   * once it listens); `dispatcher` what reaches it (a TLS listener's
   * certificate does not name the loopback address the checks go to).
   */
  constructor (origin: () => string, secret = randomBytes(16).toString('hex'), dispatcher?: Dispatcher) {
    this.origin = origin
    this.dispatcher = dispatcher
    this.secret = secret
    this.secretBytes = Buffer.from(secret, 'latin1')
  }

  /** Whether the public listener listens yet: a check run before would fail for want of an address, not for the color. */
  canRun (): boolean {
    try {
      this.origin()
      return true
    } catch {
      return false
    }
  }

  /** The color a smoke header pins, or undefined when the header is not ours. */
  colorOf (header: string | string[] | undefined): Color | undefined {
    if (typeof header !== 'string' || header.charCodeAt(this.secret.length) !== 32) return undefined
    if (!timingSafeEqual(Buffer.from(header.slice(0, this.secret.length), 'latin1'), this.secretBytes)) return undefined
    const color = header.slice(this.secret.length + 1)
    return color === 'blue' || color === 'green' ? color : undefined
  }

  /** Runs every check of a service against one color; resolves to the failures (none: passed). */
  async run (svc: ServiceConfig, color: Color): Promise<SmokeFailure[]> {
    const failures: SmokeFailure[] = []
    for (const check of svc.smoke) {
      const reason = await this.one(svc, color, check)
      if (reason !== undefined) {
        failures.push({ service: svc.name, color, check: `${check.method} ${check.path}`, expectStatus: check.expectStatus, ...reason })
      }
    }
    return failures
  }

  private async one (svc: ServiceConfig, color: Color, check: SmokeCheck): Promise<{ reason: string, status?: number } | undefined> {
    const headers: Record<string, string> = { ...check.headers, [PIN_HEADER]: `${this.secret} ${color}`, 'user-agent': 'switchyard-smoke' }
    if (svc.match.host !== undefined) headers.host = svc.match.host
    try {
      const res = await request(this.origin() + check.path, {
        method: check.method as 'GET',
        headers,
        signal: AbortSignal.timeout(svc.timeouts.connect + svc.timeouts.response),
        ...(this.dispatcher === undefined ? {} : { dispatcher: this.dispatcher }),
      })
      const body = await res.body.text()
      if (res.statusCode !== check.expectStatus) {
        return { reason: `status ${res.statusCode}, expected ${check.expectStatus}${errorCode(body)}`, status: res.statusCode }
      }
      if (check.bodyContains !== undefined && !body.includes(check.bodyContains)) {
        return { reason: `body does not contain ${JSON.stringify(check.bodyContains)}`, status: res.statusCode }
      }
      return undefined
    } catch (err) {
      return { reason: `request failed: ${(err as Error).message}` }
    }
  }
}

/** A gateway error code in the body, to say why (e.g. no_healthy_upstream). */
function errorCode (body: string): string {
  if (!body.startsWith('{"error":"')) return ''
  const end = body.indexOf('"', 10)
  return end === -1 ? '' : ` (${body.slice(10, end)})`
}
