// Multi-core serving (`serve --workers N`): worker processes share the public
// listener; the primary keeps the admin API, the controller (the one writer of
// the state file), probes and guards, and hands every routing change to every
// worker before the change is answered. Workers report their counts back, and
// finish what they hold before exiting when the primary goes away.

import cluster, { type Worker } from 'node:cluster'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { Color, Config, HostPort, TlsConfig } from '../config/schema.js'
import type { Controller } from '../control/controller.js'
import { createEdgeServer, type EdgeServer } from '../proxy/edge.js'
import { createResolver } from '../routing/resolve.js'
import { addExportCounts, type ExportCounts } from '../tracing/exporter.js'
import { startTracing, type Tracing } from '../tracing/tracing.js'
import { SmokeRunner } from '../health/smoke.js'
import { createAccessLog, drainLogs, log } from '../log.js'
import { buildSnapshot, configureSampling, configureTargets, Switcher, type RoutingState, type Snapshot } from '../routing/snapshot.js'
import { closeSpread, type RemoteColors, type Totals } from '../upstream/color-stats.js'
import { TargetRegistry, type ProbeState } from '../upstream/registry.js'
import { CertError, CertStore } from './certs.js'
import { LocalShadow, SHADOW_PARTS, ShadowResults, type ShadowParts, type ShadowReader, type ShadowReport } from '../control/shadow.js'
import type { ShadowResult, ShadowView, TallyData } from '../shadow/types.js'
import { PooledPinning, type PinReport } from '../control/pinning.js'
import { closeGracefully, listen, type ListenerDeps, type PublicListener } from './public-listener.js'

/** How often a worker reports its counts: the lag of guard, drain and /v1/state in cluster mode. */
const REPORT_MS = 100
/** Every this-many reports, a worker's carries its shadow comparisons too (they change slower and weigh more). */
const SHADOW_EVERY = 5
/** A worker that does not take a routing change within this long is logged and not waited for. */
const ACK_TIMEOUT_MS = 5000

/**
 * The generations pinning keeps, oldest first, each with the routing that
 * built it and when it stopped being current; each distinct config is sent
 * once (flips share one).
 */
interface KeptRouting {
  configs: Config[]
  generations: Array<{ config: number, state: RoutingState, retiredAt: number }>
}

type ToWorker =
  | { t: 'sync', seq: number, config: Config, state: RoutingState, probes: Record<string, ProbeState>, secret: string, listen: HostPort, ticketKeys: string, kept?: KeptRouting }
  | { t: 'certs', seq: number, tls: TlsConfig }
  | { t: 'probe', url: string, probe: ProbeState }
  | { t: 'close', service: string, color: Color, spreadMs: number }
  | { t: 'stop', graceMs: number }

type FromWorker =
  | { t: 'hello' }
  | { t: 'ack', seq: number, refused?: { path: string, file: string, reason: string } }
  | { t: 'ready', address: AddressInfo }
  | { t: 'stats', colors: Array<{ service: string, color: Color, totals: Totals }>, shadow?: WorkerShadow, pinning?: PinReport, spans?: ExportCounts }

/** A worker's shadow comparisons and its switchyard_shadow_total counts since it started. */
interface WorkerShadow {
  reports: ShadowReport[]
  results: Array<[string, Record<ShadowResult, number>]>
}

function zero (): Totals {
  return {
    inflight: 0, websockets: 0, requests: 0, errors: 0, codes: [0, 0, 0, 0, 0],
    durationBuckets: [], durationSum: 0, durationCount: 0,
    upstreamErrors: { connect_failed: 0, timeout: 0, reset: 0, no_healthy_upstream: 0 },
  }
}

function add (a: Totals, b: Totals): void {
  a.inflight += b.inflight
  a.websockets += b.websockets
  a.requests += b.requests
  a.errors += b.errors
  for (let i = 0; i < 5; i++) a.codes[i] += b.codes[i]
  b.durationBuckets.forEach((n, i) => { a.durationBuckets[i] = (a.durationBuckets[i] ?? 0) + n })
  a.durationSum += b.durationSum
  a.durationCount += b.durationCount
  for (const k of Object.keys(a.upstreamErrors) as Array<keyof Totals['upstreamErrors']>) a.upstreamErrors[k] += b.upstreamErrors[k]
  if (b.latency !== undefined) {
    const sum = a.latency ??= []
    b.latency.forEach((n, i) => { sum[i] = (sum[i] ?? 0) + n })
  }
}

/** The primary's side: forks, feeds and listens to the workers. */
export class WorkerPool implements PublicListener, RemoteColors, ShadowReader {
  private readonly count: number
  private readonly workers = new Map<number, Worker>()
  /**
   * Workers that have been sent their first routing state: from then on they
   * get every change. (Only the ready ones used to: a change made while a
   * worker started, between its first state and its listener, never reached it.)
   */
  private readonly synced = new Set<number>()
  /** Every worker's latest report, by worker id then `service/color`. */
  private readonly reports = new Map<number, Map<string, Totals>>()
  /** Counts of workers that exited: their requests happened, so totals keep them. */
  private readonly retired = new Map<string, Totals>()
  private readonly acks = new Map<string, (refused?: CertError) => void>()
  private seq = 0
  /** Session ticket keys every worker's TLS listener shares, so a client resumes its session on whichever worker it lands. */
  private readonly ticketKeys = randomBytes(48).toString('base64')
  /**
   * The certificates of the last reload, for workers started after it: a
   * reload that changes only `tls` leaves the controller's config as it
   * was (it holds routing), and a new worker would read the old files.
   */
  private tls: TlsConfig | undefined
  private stopping = false
  private controller!: Controller
  private registry!: TargetRegistry
  private secret = ''
  private at: HostPort | undefined
  address: AddressInfo | undefined
  /** The workers hold every connection: a drain deadline closes a color's in each of them. */
  readonly remote: RemoteColors = this
  /** How the workers' comparisons are summed and read. */
  private readonly shadowParts: ShadowParts
  /** Every worker's latest shadow report, by worker id. */
  private readonly shadowReports = new Map<number, WorkerShadow>()
  /** The comparisons and counts of workers that exited: their copies happened too. */
  private retiredShadow: ShadowReport[] = []
  private readonly retiredResults = new ShadowResults()
  /** The workers' pinning counts summed (what the metrics and /v1/state read when workers serve). */
  readonly pinning = new PooledPinning()
  /** Each worker's latest span export counts (`tracing` on), and those of workers that exited. */
  private readonly spanReports = new Map<number, ExportCounts>()
  private retiredSpans: ExportCounts = { exported: 0, dropped: 0, failed: 0 }
  private tracingOn = false
  /** The routing each generation was handed out with, while it is current or kept (see keptRouting). */
  private readonly routings = new Map<number, { config: Config, state: RoutingState }>()

  constructor (count: number, shadowParts: ShadowParts = SHADOW_PARTS) {
    this.count = count
    this.shadowParts = shadowParts
  }

  /** What the controller and metrics read of shadow traffic: the workers' comparisons summed. */
  get shadow (): ShadowReader {
    return this
  }

  comparison (service: string, key: string): TallyData | undefined {
    const list: TallyData[] = []
    for (const r of [...this.retiredShadow, ...[...this.shadowReports.values()].flatMap((w) => w.reports)]) {
      if (r.service === service && r.key === key) list.push(r.data)
    }
    if (list.length === 0) return undefined
    return list.length === 1 ? list[0] : this.shadowParts.mergeTallyData(list)
  }

  * inflight (): Iterable<[string, number]> {
    const sum = new Map<string, number>()
    for (const w of this.shadowReports.values()) for (const r of w.reports) sum.set(r.service, (sum.get(r.service) ?? 0) + r.inflight)
    yield * sum
  }

  results (): ReadonlyMap<string, Record<ShadowResult, number>> {
    const sum = new ShadowResults()
    for (const [service, counts] of this.retiredResults) for (const [result, n] of Object.entries(counts)) sum.add(service, result as ShadowResult, n)
    for (const w of this.shadowReports.values()) {
      for (const [service, counts] of w.results) for (const [result, n] of Object.entries(counts)) sum.add(service, result as ShadowResult, n)
    }
    return sum
  }

  viewOf (data: TallyData): ShadowView {
    return this.shadowParts.viewOf(data)
  }

  /** The workers' span export counts summed, exited workers' included; undefined with tracing off. */
  readonly spans = (): ExportCounts | undefined => {
    if (!this.tracingOn) return undefined
    let sum = this.retiredSpans
    for (const r of this.spanReports.values()) sum = addExportCounts(sum, r)
    return sum
  }

  /** Forks the workers and resolves once every one listens with the current routing. */
  async start ({ controller, registry, smoke, listen: at, config }: ListenerDeps): Promise<void> {
    this.tracingOn = config.tracing !== undefined
    this.controller = controller
    this.registry = registry
    // Workers recognize the primary's smoke checks by its secret.
    this.secret = smoke.secret
    this.at = at
    registry.onHealthChange((c) => this.broadcast({ t: 'probe', url: c.target.url, probe: c.target.probe }))
    cluster.on('exit', (worker, code, signal) => this.onExit(worker, code, signal))
    const all: Array<Promise<void>> = []
    for (let i = 0; i < this.count; i++) all.push(this.fork())
    await Promise.all(all)
  }

  private async fork (): Promise<void> {
    const worker = cluster.fork({ SWITCHYARD_WORKER: '1' })
    this.workers.set(worker.id, worker)
    await new Promise<void>((resolve, reject) => {
      worker.once('exit', (code) => reject(new Error(`worker ${worker.id} exited (${String(code)}) before it was ready`)))
      worker.on('message', (msg: FromWorker) => {
        if (msg.t === 'hello') {
          // A worker's first routing carries the kept generations: one started in place of a dead one routes a pinned chain as the others do.
          this.send(worker, { ...this.syncMessage(), kept: this.keptRouting() })
          this.synced.add(worker.id)
          log('info', 'worker started; routing sent', { worker: worker.id, pid: worker.process.pid })
        } else if (msg.t === 'ready') {
          this.address = msg.address
          resolve()
        } else if (msg.t === 'ack') this.acks.get(`${worker.id}/${msg.seq}`)?.(msg.refused === undefined ? undefined : new CertError(msg.refused.path, msg.refused.file, msg.refused.reason))
        else if (msg.t === 'stats') {
          this.onStats(worker.id, msg.colors)
          if (msg.shadow !== undefined) this.onShadow(worker.id, msg.shadow)
          if (msg.pinning !== undefined) this.pinning.report(worker.id, msg.pinning)
          if (msg.spans !== undefined) this.spanReports.set(worker.id, msg.spans)
        }
      })
    })
  }

  private syncMessage (): Extract<ToWorker, { t: 'sync' }> {
    const { config, state } = this.controller.routing()
    this.routings.set(state.generation, { config, state })
    this.forgetRoutings(state.generation)
    // The kept generations' targets too: a worker started late knows at once which a pinned chain may reach.
    const probes: Record<string, ProbeState> = {}
    for (const url of this.controller.targetsInUse()) {
      const target = this.registry.find(url)
      if (target !== undefined) probes[url] = target.probe
    }
    return { t: 'sync', seq: ++this.seq, config: this.tls === undefined ? config : { ...config, tls: this.tls }, state, probes, secret: this.secret, listen: this.at as HostPort, ticketKeys: this.ticketKeys }
  }

  /** Routings of generations neither current nor kept are forgotten (at most MAX_KEPT + 1 are held). */
  private forgetRoutings (current: number): void {
    const keep = new Set([current])
    for (const { generation } of this.controller.keptGenerations()) keep.add(generation)
    for (const g of this.routings.keys()) if (!keep.has(g)) this.routings.delete(g)
  }

  /** The kept generations' routing, from what was handed out. */
  private keptRouting (): KeptRouting {
    const configs: Config[] = []
    const index = new Map<Config, number>()
    const generations: KeptRouting['generations'] = []
    for (const { generation, retiredAt } of this.controller.keptGenerations()) {
      const routing = this.routings.get(generation)
      // Every generation was handed out before it was retired; one that was not cannot be rebuilt.
      if (routing === undefined) continue
      let i = index.get(routing.config)
      if (i === undefined) {
        i = configs.push(routing.config) - 1
        index.set(routing.config, i)
      }
      generations.push({ config: i, state: routing.state, retiredAt })
    }
    return { configs, generations }
  }

  private send (worker: Worker, msg: ToWorker): void {
    if (worker.isConnected()) worker.send(msg)
  }

  private broadcast (msg: ToWorker): void {
    for (const w of this.workers.values()) this.send(w, msg)
  }

  /** Hands new routing to every worker; resolves when all have swapped it in. (A property: the controller calls it unbound.) */
  readonly publish = async (): Promise<void> => {
    await this.toEvery(this.syncMessage(), 'a routing change')
  }

  /**
   * Every worker reads its certificates again; resolves once all have, or
   * throws the refusal of the first that could not (the files changed
   * under the reload): the refusing workers serve their old ones.
   */
  readonly reloadCerts = async (tls: TlsConfig): Promise<boolean> => {
    const refusals = await this.toEvery({ t: 'certs', seq: ++this.seq, tls }, 'a certificate reload')
    if (refusals.length > 0) throw refusals[0]
    this.tls = tls
    return true
  }

  /** Sends `msg` to every worker that has its routing and waits for each one's ack (or ACK_TIMEOUT_MS); the refusals acked. */
  private async toEvery (msg: Extract<ToWorker, { seq: number }>, what: string): Promise<CertError[]> {
    const refusals: CertError[] = []
    const waits = [...this.workers.values()].filter((w) => this.synced.has(w.id)).map(async (w) => await new Promise<void>((resolve) => {
      const key = `${w.id}/${msg.seq}`
      const timer = setTimeout(() => {
        this.acks.delete(key)
        log('error', `worker did not take ${what} in time`, { worker: w.id, seq: msg.seq })
        resolve()
      }, ACK_TIMEOUT_MS)
      this.acks.set(key, (refused) => {
        clearTimeout(timer)
        this.acks.delete(key)
        if (refused !== undefined) refusals.push(refused)
        resolve()
      })
      this.send(w, msg)
    }))
    await Promise.all(waits)
    return refusals
  }

  closeAll (service: string, color: Color, spreadMs: number): void {
    this.broadcast({ t: 'close', service, color, spreadMs })
  }

  private onStats (id: number, colors: Array<{ service: string, color: Color, totals: Totals }>): void {
    const mine = new Map(colors.map((c) => [`${c.service}/${c.color}`, c.totals]))
    this.reports.set(id, mine)
    for (const key of mine.keys()) this.total(key)
  }

  private onShadow (id: number, shadow: WorkerShadow): void {
    this.shadowReports.set(id, shadow)
    // An exited worker's comparison counts while it is the one in force: a live worker on another key (a flip, new idle targets) ends it.
    if (this.retiredShadow.length > 0) {
      const keys = new Map(shadow.reports.map((r) => [r.service, r.key]))
      this.retiredShadow = this.retiredShadow.filter((r) => (keys.get(r.service) ?? r.key) === r.key)
    }
  }

  /** Sums one color over the workers (and the ones that exited) into the primary's ColorStats. */
  private total (key: string): void {
    const sum = zero()
    const gone = this.retired.get(key)
    if (gone !== undefined) add(sum, { ...gone, inflight: 0, websockets: 0 })
    for (const r of this.reports.values()) {
      const t = r.get(key)
      if (t !== undefined) add(sum, t)
    }
    const [service, color] = key.split('/') as [string, Color]
    this.registry.colorStats(service, color).setTotals(sum)
  }

  private onExit (worker: Worker, code: number | null, signal: string | null): void {
    if (!this.workers.has(worker.id)) return
    this.workers.delete(worker.id)
    this.synced.delete(worker.id)
    // A dead worker acks nothing: waiting out ACK_TIMEOUT_MS would hold the change's answer and the controller's queue (an auto-revert too).
    for (const [key, done] of this.acks) if (key.startsWith(`${worker.id}/`)) done()
    const shadow = this.shadowReports.get(worker.id)
    this.shadowReports.delete(worker.id)
    if (shadow !== undefined) {
      this.retiredShadow.push(...shadow.reports)
      for (const [service, counts] of shadow.results) for (const [result, n] of Object.entries(counts)) this.retiredResults.add(service, result as ShadowResult, n)
    }
    this.pinning.retire(worker.id)
    const spans = this.spanReports.get(worker.id)
    this.spanReports.delete(worker.id)
    if (spans !== undefined) this.retiredSpans = addExportCounts(this.retiredSpans, spans)
    const last = this.reports.get(worker.id)
    this.reports.delete(worker.id)
    for (const [key, t] of last ?? []) {
      const r = this.retired.get(key) ?? zero()
      add(r, t)
      this.retired.set(key, r)
      this.total(key)
    }
    if (this.stopping) return
    log('error', 'worker exited; starting another', { worker: worker.id, code, signal })
    this.fork().catch((err: Error) => log('error', 'could not start a worker', { error: err.message }))
  }

  /** Shutdown: every worker finishes its in-flight requests (up to `graceMs`) and exits. */
  async stop (graceMs: number): Promise<void> {
    this.stopping = true
    const exits = [...this.workers.values()].map(async (w) => await new Promise<void>((resolve) => {
      if (w.isDead()) return resolve()
      w.once('exit', () => resolve())
      this.send(w, { t: 'stop', graceMs })
      setTimeout(() => { w.kill('SIGKILL') }, graceMs + 2000).unref()
    }))
    await Promise.all(exits)
  }
}

/**
 * Sends to the primary while there is one. (A send can still fail just after
 * the primary died: runWorker hears that 'error' rather than crash.)
 */
function tell (msg: FromWorker): void {
  if (process.connected) process.send?.(msg)
}

/**
 * A worker process: the public listener and the request path only. Its
 * routing comes from the primary; it reports its counts every REPORT_MS.
 * Should the primary die, it stops accepting, finishes what it holds (up to
 * the longest drain.timeout, as a SIGTERM would) and exits 0.
 */
export function runWorker (shadowParts: ShadowParts = SHADOW_PARTS): void {
  const registry = new TargetRegistry()
  // Each worker copies the requests it serves (maxConcurrent per process) and counts its own comparisons; the primary sums them.
  const shadow = new LocalShadow(shadowParts)
  let switcher: Switcher | undefined
  let edge: EdgeServer | undefined
  let smoke: SmokeRunner | undefined
  let flush: (() => void) | undefined
  let config: Config | undefined
  let certs: CertStore | undefined
  /** This worker's span export (`tracing`): each worker sends the spans of the requests it serves. */
  let tracing: Tracing | undefined

  const apply = (config: Config, state: RoutingState, probes: Record<string, ProbeState>, kept?: KeptRouting): void => {
    const snapshot = buildSnapshot(config, state, registry, shadow)
    if (switcher === undefined) {
      switcher = rebuildKept(snapshot, kept, registry)
    } else {
      switcher.swap(snapshot)
    }
    shadow.installed(snapshot)
    for (const target of configureTargets(snapshot, ...switcher.kept.snapshots())) {
      const p = probes[target.url]
      if (p !== undefined) target.setProbe(p)
    }
    // The kept snapshots' targets stay open for the chains pinned to them.
    registry.prune(switcher.targets())
    configureSampling(snapshot)
  }

  let reports = 0
  const report = setInterval(() => {
    const colors = [...registry.allColorStats()].map((s) => ({ service: s.service, color: s.color, totals: s.totals() }))
    const withShadow = ++reports % SHADOW_EVERY === 0
    const msg: FromWorker = withShadow ? { t: 'stats', colors, shadow: { reports: shadow.reports(), results: [...shadow.results()] } } : { t: 'stats', colors }
    // With pinning on, every report carries its counts (at most MAX_KEPT generations); off, nothing.
    if (config?.pinning !== undefined && switcher !== undefined) msg.pinning = { counts: switcher.kept.counts, byGeneration: switcher.kept.pinnedByGeneration() }
    if (tracing !== undefined) msg.spans = tracing.exporter.counts
    tell(msg)
  }, REPORT_MS)
  report.unref()

  let stopping = false
  const stop = async (graceMs: number): Promise<void> => {
    if (stopping) return
    stopping = true
    clearInterval(report)
    for (const s of registry.allColorStats()) for (const ws of s.openWs) ws.close()
    certs?.close()
    await closeGracefully([edge], edge?.upgraded ?? new Set(), graceMs)
    flush?.()
    await tracing?.stop()
    await registry.destroy()
    if (!process.connected) log('info', 'worker stopped', { pid: process.pid, code: 0 })
    // The line above is being written asynchronously: exit only once it is out.
    await drainLogs()
    process.exit(0)
  }
  // The primary says when to stop; a signal to the whole process group is the same request.
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => {})
  // node:cluster makes a worker exit at once when its channel to the primary
  // closes unasked, cutting every request it holds. Mark the disconnect as
  // expected and drain instead: the primary was killed (SIGKILL, OOM) and a
  // supervisor is starting a new one.
  if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true
  // Between the primary's death and this process reading the end of its channel,
  // process.connected is still true and a send (a report, node:cluster's ack of
  // a connection) fails with EPIPE. node:cluster re-emits that as an 'error' on
  // the worker, which unheard would crash this process with every request it
  // holds. The 'disconnect' that follows drains as below.
  const channel: NodeJS.EventEmitter = cluster.worker ?? process
  channel.on('error', (err: Error) => {
    log('warn', 'worker: a message to the primary was lost', { pid: process.pid, error: err.message })
  })
  process.once('disconnect', () => {
    if (stopping) return
    const graceMs = config === undefined ? 0 : Math.max(0, ...Object.values(config.services).map((s) => s.drain.timeout))
    log('warn', 'worker: the primary is gone; finishing in-flight requests, then exiting', { pid: process.pid, graceMs })
    void stop(graceMs)
  })

  process.on('message', (msg: ToWorker) => {
    if (msg.t === 'sync') {
      apply(msg.config, msg.state, msg.probes, msg.kept)
      config = msg.config
      if (edge === undefined) {
        registry.observers.metrics = msg.config.metrics.enabled
        if (msg.config.log.access !== false) {
          const al = createAccessLog(msg.config.log.access)
          registry.observers.accessLog = al.write
          flush = al.flush
        }
        smoke = new SmokeRunner(() => '', msg.secret)
        if (msg.config.tls !== undefined) {
          try {
            // Each worker its own store and watch: a file change reaches every worker without the primary.
            certs = new CertStore(msg.config.tls, {
              ticketKeys: Buffer.from(msg.ticketKeys, 'base64'),
              // Every worker logs its own reloads and refusals: which one is which.
              log: (level, text, fields) => { log(level, text, { ...fields, pid: process.pid }) },
            })
          } catch (err) {
            log('error', 'worker cannot serve its certificates', { pid: process.pid, error: (err as Error).message })
            void drainLogs().then(() => process.exit(1))
            return
          }
        }
        tracing = startTracing(msg.config.tracing)
        edge = createEdgeServer(createResolver((switcher as Switcher).view, smoke, tracing?.tracer), msg.config, certs)
        listen(edge.server, msg.listen).then(() => {
          certs?.watch()
          log('info', 'worker listening', { pid: process.pid })
          tell({ t: 'ready', address: edge?.server.address() as AddressInfo })
        }, (err: Error) => {
          log('error', 'worker cannot listen', { error: err.message })
          process.exit(1)
        })
      }
      tell({ t: 'ack', seq: msg.seq })
    } else if (msg.t === 'certs') {
      try {
        certs?.reloadLogged(msg.tls)
        tell({ t: 'ack', seq: msg.seq })
      } catch (err) {
        if (!(err instanceof CertError)) throw err
        tell({ t: 'ack', seq: msg.seq, refused: { path: err.path, file: err.file, reason: err.reason } })
      }
    } else if (msg.t === 'probe') {
      registry.find(msg.url)?.setProbe(msg.probe)
    } else if (msg.t === 'close') {
      const s = registry.colorStats(msg.service, msg.color)
      closeSpread([...s.openWs, ...s.openHttp], msg.spreadMs)
    } else if (msg.t === 'stop') {
      void stop(msg.graceMs)
    }
  })
  tell({ t: 'hello' })
}

/**
 * A worker's switcher, from its first routing: the primary's kept
 * generations are rebuilt oldest first, each retired when the primary
 * retired it, then the current one is swapped in. A worker started in place
 * of a dead one then keeps what the others keep. (Pinned requests are never
 * copied: the kept snapshots are built without shadow traffic.) One that
 * does not build is left out (the worker starts rather than not at all).
 */
function rebuildKept (current: Snapshot, kept: KeptRouting | undefined, registry: TargetRegistry): Switcher {
  const configs = kept?.configs ?? []
  const history: Array<{ snapshot: Snapshot, retiredAt: number }> = []
  for (const k of kept?.generations ?? []) {
    try {
      history.push({ snapshot: buildSnapshot(configs[k.config], k.state, registry), retiredAt: k.retiredAt })
    } catch (err) {
      log('error', 'worker cannot rebuild a kept generation; chains pinned to it fall back on this worker', { pid: process.pid, generation: k.state.generation, error: (err as Error).message })
    }
  }
  // Not while rebuilding: the current snapshot's targets are not the switcher's yet (apply prunes once it is done).
  let rebuilt = false
  const switcher: Switcher = new Switcher(history[0]?.snapshot ?? current, () => { if (rebuilt) registry.prune(switcher.targets()) })
  for (let i = 1; i < history.length; i++) switcher.swap(history[i].snapshot, history[i - 1].retiredAt)
  if (history.length > 0) switcher.swap(current, history[history.length - 1].retiredAt)
  rebuilt = true
  return switcher
}
