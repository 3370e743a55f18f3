// Active health probes: per target, GET health.path every interval (with a
// little jitter) under a hard deadline, on one keep-alive dispatcher for all
// probes; or, with health.grpc, grpc.health.v1.Health/Check over HTTP/2.

import { Agent, type Dispatcher } from 'undici'
import type { HealthConfig } from '../config/schema.js'
import { h2TlsOptions, type Target } from '../upstream/registry.js'
import { GrpcProbeSessions, PROBE_USER_AGENT } from './grpc-health.js'

const JITTER = 0.1

interface Loop {
  target: Target
  config: HealthConfig
  timer: NodeJS.Timeout | undefined
  /** The first probe has finished (readiness waits for it). */
  done: boolean
}

export class Prober {
  private readonly agent: Dispatcher
  /** HTTP/2 sessions for gRPC probes, made on the first one. */
  private grpc: GrpcProbeSessions | undefined
  private readonly loops = new Map<string, Loop>()
  private stopped = false

  constructor () {
    this.agent = new Agent({ keepAliveTimeout: 10_000, connections: 2 })
  }

  /**
   * Probes exactly these targets (those with a health config). New ones are
   * probed at once; a changed config takes effect at the next probe.
   */
  sync (targets: Iterable<Target>): void {
    const keep = new Set<string>()
    for (const target of targets) {
      if (target.health === undefined) continue
      keep.add(target.url)
      const loop = this.loops.get(target.url)
      if (loop !== undefined && loop.target === target) {
        // gRPC probes turned off: their session to the target is not needed any more.
        if (loop.config.grpc !== undefined && target.health.grpc === undefined) this.grpc?.forget(target.url)
        loop.config = target.health
        continue
      }
      if (loop !== undefined) this.stopLoop(loop)
      const fresh: Loop = { target, config: target.health, timer: undefined, done: false }
      this.loops.set(target.url, fresh)
      this.schedule(fresh, Math.random() * Math.min(50, fresh.config.interval * JITTER))
    }
    for (const [url, loop] of this.loops) {
      if (!keep.has(url)) this.stopLoop(loop)
    }
  }

  /** Whether this target's first probe has finished (true when it is not probed). */
  hasProbed (target: Target): boolean {
    const loop = this.loops.get(target.url)
    return loop === undefined || loop.done
  }

  private stopLoop (loop: Loop): void {
    clearTimeout(loop.timer)
    loop.timer = undefined
    if (this.loops.get(loop.target.url) === loop) {
      this.loops.delete(loop.target.url)
      this.grpc?.forget(loop.target.url)
    }
  }

  private schedule (loop: Loop, delay: number): void {
    if (this.stopped) return
    loop.timer = setTimeout(() => { void this.run(loop) }, delay)
    loop.timer.unref()
  }

  private async run (loop: Loop): Promise<void> {
    if (this.loops.get(loop.target.url) !== loop) return
    const { config, target } = loop
    const { ok, detail } = await this.probe(target.url, config)
    if (this.loops.get(loop.target.url) !== loop) return
    loop.done = true
    target.recordProbe(ok, detail)
    const jitter = 1 + (Math.random() * 2 - 1) * JITTER
    this.schedule(loop, config.interval * jitter)
  }

  /** One probe: pass on an expected status within the deadline. */
  async probe (origin: string, config: HealthConfig): Promise<{ ok: boolean, detail: string }> {
    if (config.grpc !== undefined) {
      this.grpc ??= new GrpcProbeSessions(h2TlsOptions)
      return await this.grpc.check(origin, config.grpc.service, config.timeout)
    }
    try {
      const res = await this.agent.request({
        origin,
        path: config.path,
        method: 'GET',
        headers: { 'user-agent': PROBE_USER_AGENT },
        signal: AbortSignal.timeout(config.timeout),
      })
      await res.body.dump()
      const ok = config.expectStatus.length === 0 ? res.statusCode >= 200 && res.statusCode < 300 : config.expectStatus.includes(res.statusCode)
      return { ok, detail: `${config.path} answered ${res.statusCode}` }
    } catch (err) {
      const e = err as Error & { code?: string }
      const detail = e.name === 'TimeoutError' ? `timed out after ${config.timeout}ms` : (e.code ?? e.message)
      return { ok: false, detail: `${config.path} ${detail}` }
    }
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const loop of this.loops.values()) clearTimeout(loop.timer)
    this.loops.clear()
    this.grpc?.close()
    await this.agent.destroy()
  }
}
