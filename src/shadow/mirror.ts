// Shadow traffic's request side: which live requests are copied (ShadowRoute),
// and the tap that keeps one of them and its answer, then sends the copies and compares.
//
// The tap sits in the request path, so it must be cheap and harmless: it
// copies what it is shown (never keeps an engine's buffer), keeps at most
// maxBody of each body, never throws into the exchange (a bug drops the
// copy), waits for nothing, and holds nothing once its copies are settled.

import type { AnswerTap } from '../proxy/resolve.js'
import { ChunkedScanner } from '../proxy/h1/parse.js'
import type { Endpoint } from '../upstream/target-set.js'
import { answerHeaders } from './compare.js'
import { Capped, copyHead, ShadowCopy } from './copy.js'
import type { Answer, DropReason, ShadowPlan } from './types.js'

/** One service's shadow traffic, as the routing snapshot holds it (undefined when off). */
export class ShadowRoute {
  readonly plan: ShadowPlan
  private readonly methods: ReadonlySet<string>
  private readonly share: number
  private readonly until: number | undefined

  constructor (plan: ShadowPlan) {
    this.plan = plan
    this.methods = new Set(plan.settings.methods)
    this.share = plan.settings.sample
    this.until = plan.until
  }

  /** A tap when this request is picked for a copy; undefined (and nothing allocated) for every other. */
  sample (method: string): AnswerTap | undefined {
    if (!this.methods.has(method) || !(Math.random() < this.share)) return undefined
    if (this.until !== undefined && Date.now() >= this.until) return undefined
    return new ShadowTap(this.plan)
  }
}

const enum State { Open, Ended, Gone }

/** An endpoint's length at most: a long path is still one endpoint, never a long key. */
const ENDPOINT_MAX = 100
/**
 * A path segment that names one thing rather than a kind of thing: all digits,
 * a UUID, or a token of 16 or more letters, digits, `_`, `-`, `+`, `=` (hex,
 * base64, base64url ids) with a digit in it. Words (`random`, `me`, `search`)
 * and short codes stay themselves.
 */
const ID_SEGMENT = /^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?=[\w+=-]*\d)[\w+=-]{16,})$/i

/**
 * The endpoint a copy's pair and probe are counted under (noise is learnt per
 * endpoint, see tally.ts): the method and the path without its query, each
 * id-like segment (ID_SEGMENT) written `{id}`, so `/users/7` and `/users/8`
 * are one endpoint, `GET /users/{id}`; cut at ENDPOINT_MAX characters.
 * Computed once per copy sent, never for a request not copied.
 */
export function endpointOf (method: string, target: string): string {
  let start = 0
  // An absolute-form target (`http://host/path`) names its path after the authority.
  if (target.charCodeAt(0) !== 0x2f) {
    const scheme = target.indexOf('://')
    if (scheme !== -1) {
      const slash = target.indexOf('/', scheme + 3)
      start = slash === -1 ? target.length : slash
    }
  }
  let end = target.indexOf('?', start)
  if (end === -1) end = target.length
  const segments = target.slice(start, end).split('/')
  for (let i = 0; i < segments.length; i++) if (ID_SEGMENT.test(segments[i])) segments[i] = '{id}'
  const path = segments.join('/')
  const endpoint = `${method} ${path === '' ? '/' : path}`
  return endpoint.length > ENDPOINT_MAX ? endpoint.slice(0, ENDPOINT_MAX) : endpoint
}

/** The host a copy names when the live request's fields carry none (as undici does): the target's own. */
function hostOf (endpoint: Endpoint): string {
  const { host, port, tls } = endpoint.target.origin
  const name = host.includes(':') ? `[${host}]` : host
  return port === (tls ? 443 : 80) ? name : `${name}:${port}`
}

/** One picked request: what the exchange shows it, then its copies. */
class ShadowTap implements AnswerTap {
  private plan: ShadowPlan | undefined
  private state = State.Open
  private method = ''
  private target = ''
  private fields: string | readonly string[] | undefined = undefined
  private requestBytes: Capped | undefined = undefined
  private status = 0
  private answerFields: string | ReadonlyArray<string | Buffer> | undefined = undefined
  private scanner: ChunkedScanner | undefined = undefined
  private answerBytes: Capped | undefined = undefined
  /** The live answer as compared, once the exchange ended. */
  private live: Answer | undefined = undefined
  /** Copies still out (the idle one, and a noise probe). */
  private out = 0
  /** The request body's last chunk was seen (a body the exchange never read whole is not copied). */
  private requestWhole = false
  /** The request's endpoint (endpointOf), set as its copy leaves. */
  private endpoint = ''

  constructor (plan: ShadowPlan) {
    this.plan = plan
  }

  request (method: string, target: string, fields: string | readonly string[]): void {
    if (this.state !== State.Open) return
    this.method = method
    this.target = target
    this.fields = fields
  }

  requestBody (chunk: Buffer, last: boolean): void {
    if (this.state !== State.Open) return
    try {
      (this.requestBytes ??= new Capped((this.plan as ShadowPlan).settings.maxBody)).add(chunk)
      if (last) this.requestWhole = true
    } catch {
      this.forget()
    }
  }

  head (status: number, fields: string | ReadonlyArray<string | Buffer>, chunked: boolean): void {
    if (this.state !== State.Open) return
    try {
      this.status = status
      this.answerFields = fields
      this.scanner = chunked ? new ChunkedScanner(true) : undefined
      this.answerBytes = new Capped((this.plan as ShadowPlan).settings.maxBody)
    } catch {
      this.forget()
    }
  }

  body (chunk: Buffer): void {
    const bytes = this.answerBytes
    if (this.state !== State.Open || bytes === undefined || bytes.over) return
    try {
      const scanner = this.scanner
      if (scanner === undefined) return bytes.add(chunk)
      const end = scanner.scan(chunk, 0)
      const parts = scanner.parts as Buffer[]
      for (const part of parts) bytes.add(part)
      parts.length = 0
      // The engine relays only valid framing; should it not, there is no body to compare.
      if (end === -2) this.forget()
    } catch {
      this.forget()
    }
  }

  end (): void {
    if (this.state !== State.Open) return
    if (this.fields === undefined || this.answerFields === undefined) return this.forget()
    // The upstream answered before the client sent its whole body: a copy of part of it would be another request.
    if (this.requestBytes !== undefined && !this.requestWhole) return this.forget()
    this.state = State.Ended
    // The client's bytes go first: the copies leave on the next turn of the event loop.
    setImmediate(this.launch)
  }

  abort (): void {
    if (this.state === State.Open) this.forget()
  }

  /** Lets go of everything: no copy, nothing held. */
  private forget (): void {
    this.state = State.Gone
    this.plan = undefined
    this.fields = undefined
    this.requestBytes = undefined
    this.answerFields = undefined
    this.scanner = undefined
    this.answerBytes = undefined
    this.live = undefined
  }

  private readonly launch = (): void => {
    try {
      this.copy()
    } catch {
      // A bug here costs this copy, nothing else (a copy already sent still settles on its own).
      if (this.out === 0) this.forget()
    }
  }

  /** Sends the copy to the idle color and, while learning or by the noise share, a probe to the live one. */
  private copy (): void {
    const plan = this.plan
    if (this.state !== State.Ended || plan === undefined) return
    const { tally, settings } = plan
    const requestBody = this.requestBytes?.bytes()
    if (this.requestBytes !== undefined && requestBody === undefined) return this.drop('body_too_large')
    if (tally.inflight >= settings.maxConcurrent) return this.drop('busy')
    const idle = plan.idle.pick()
    if (idle === undefined) return this.drop('no_target')
    const probe = tally.copies < settings.learn || Math.random() < settings.noise
    const opts = { maxBody: settings.maxBody, timeout: settings.timeout }
    const fields = this.fields as string | readonly string[]
    const length = requestBody?.length ?? 0
    const body = length > 0 ? requestBody : undefined
    this.live = {
      status: this.status,
      headers: answerHeaders(this.answerFields as string | ReadonlyArray<string | Buffer>),
      body: (this.answerBytes as Capped).bytes(),
    }
    // Before the copy leaves, so its answer, however soon, is counted under it.
    this.endpoint = endpointOf(this.method, this.target)
    if (!ShadowCopy.send(idle, this.method, copyHead(this.method, this.target, fields, length, hostOf(idle)), body, opts, this.onIdle)) {
      return this.drop('no_target')
    }
    this.out++
    tally.inflight++
    tally.sent()
    // What the copies need is in `live` and their heads now.
    this.fields = undefined
    this.requestBytes = undefined
    this.answerFields = undefined
    this.answerBytes = undefined
    this.scanner = undefined
    if (!probe) return
    if (tally.inflight >= settings.maxConcurrent) return tally.dropped('busy')
    const live = plan.live.pick()
    if (live === undefined) return tally.dropped('no_target')
    // The live target's connections are the clients': a probe leaves room for one more.
    if (!ShadowCopy.send(live, this.method, copyHead(this.method, this.target, fields, length, hostOf(live)), body, { ...opts, leaveRoom: true }, this.onProbe)) {
      return tally.dropped('no_target')
    }
    this.out++
    tally.inflight++
  }

  private drop (reason: DropReason): void {
    this.plan?.tally.dropped(reason)
    this.forget()
  }

  private readonly onIdle = (result: Answer | DropReason): void => {
    this.settle(result, false)
  }

  private readonly onProbe = (result: Answer | DropReason): void => {
    this.settle(result, true)
  }

  /** A copy is back: compared with the live answer (a pair, or a noise probe), or counted as dropped. */
  private settle (result: Answer | DropReason, probe: boolean): void {
    const plan = this.plan
    if (plan === undefined) return
    const { tally, comparer } = plan
    tally.inflight--
    try {
      const live = this.live as Answer
      if (typeof result === 'string') {
        tally.dropped(result)
      } else if (probe) {
        tally.noise(comparer.compare(live, result), this.endpoint)
      } else {
        tally.pair(comparer.compare(live, result), live.body !== undefined && result.body !== undefined, this.endpoint)
      }
    } catch {
      // A comparer that throws cannot judge this pair: counted as failed rather than lost.
      try { tally.dropped('failed') } catch {}
    }
    if (--this.out === 0) this.forget()
  }
}
