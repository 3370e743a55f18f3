// The etcd state store: routing state, change events and health noise under one key
// prefix, each change one transaction conditioned on the revision it was built from, and
// one watch on the prefix that brings every replica what any of them committed.

import { readFileSync } from 'node:fs'
import { ExponentialBackoff, noop } from 'cockatiel'
import {
  Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError, GRPCUnauthenticatedError, GRPCUnavailableError,
  type DeleteBuilder, type IKeyValue, type IOptions, type PutBuilder, type IRangeResponse, type IWatchResponse, type Watcher,
} from 'etcd3'
import type { EtcdConfig } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import { log } from '../log.js'
import type { NewEvent, SwitchyardEvent } from './events.js'
import { parseStateDocument, StateFileError, type PersistedState } from './file-store.js'
import { StoreConflict, type CommitOptions, type EventSink, type ReplicaRecord, type StateStore, type StoreChange, type StoreStatus } from './store.js'

/** Change events kept under P/events/ (by generation) and in memory; noise events kept in memory. */
export const EVENTS_KEPT = 1000
/** Noise slots per replica under P/noise/<id>/. */
export const NOISE_SLOTS = 200
/** The longest a write (a commit, a record) waits for etcd before it is reported as failed. */
const CALL_MS = 2500
/** How often a starting store tries again, and a lost watch re-reads. */
const RETRY_MS = 500
/** How often connectivity is checked (and how long the check may take). */
const PROBE_MS = 1000
/** The longest a commit's answer waits for the watch to bring the commit (so the event log lists it). */
const SEEN_WAIT_MS = 1000
/** What to do about a state in etcd that cannot be read. */
const ETCD_REMEDY = 'Write a good one with `switchyard state import`; it is never replaced by defaults.'

/** A replica record as the store last read it, with the lease it lives under. */
export interface ReplicaEntry {
  record: ReplicaRecord
  lease: string
}

/** The holder of P/leader: a replica id, and the lease its key lives under. */
export interface LeaderKey {
  id: string
  lease: string
}

/** Change events or noise events, oldest first, one per id, at most EVENTS_KEPT. */
class EventRing {
  readonly items: SwitchyardEvent[] = []

  add (ev: SwitchyardEvent): void {
    let i = this.items.length
    while (i > 0 && this.items[i - 1].id >= ev.id) {
      if (this.items[i - 1].id === ev.id) return
      i--
    }
    this.items.splice(i, 0, ev)
    if (this.items.length > EVENTS_KEPT) this.items.shift()
  }
}

/** What one read of the whole prefix found. */
interface FullRead {
  state: PersistedState | undefined
  stateRevision: number
  /** The revision the read was taken at. */
  revision: number
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0')

function isAuthError (err: unknown): boolean {
  return err instanceof EtcdAuthenticationFailedError || err instanceof EtcdPermissionDeniedError || err instanceof GRPCUnauthenticatedError
}

/**
 * A replica record as read from etcd, or undefined (logged) when it is not
 * one: every replica reads every record, and one written by something else
 * must not take the fleet view (or the guard's sums) down with it.
 */
function asReplicaRecord (raw: unknown, id: string): ReplicaRecord | undefined {
  const r = raw as Partial<ReplicaRecord> | undefined
  const ok = r !== null && typeof r === 'object' && r.id === id && (r.admin === null || typeof r.admin === 'string') &&
    Number.isSafeInteger(r.generation) && Number.isSafeInteger(r.revision) && typeof r.heartbeat === 'string' &&
    r.counts !== null && typeof r.counts === 'object' &&
    Object.values(r.counts).every((colors) => colors !== null && typeof colors === 'object' &&
      Object.values(colors).every((c) => c !== null && typeof c === 'object' && Number.isFinite(c.requests) && Number.isFinite(c.errors)))
  if (!ok) {
    if (raw !== undefined) log('warn', 'an etcd replica record is not one this version reads; left out of the fleet view', { id })
    return undefined
  }
  return r as ReplicaRecord
}

/** A client error's message, without the empty "Resolution note" gRPC appends. */
function causeOf (err: unknown): string {
  return (err as Error).message.replace(/\.? Resolution note: ?$/, '')
}

async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

/** The etcd3 client options for a config: auth, TLS, and no hidden retries (every call has its own deadline). */
function clientOptions (config: EtcdConfig): IOptions {
  const tls = config.tls
  const read = (file: string | undefined): Buffer | undefined => file === undefined ? undefined : readFileSync(file)
  return {
    hosts: config.endpoints,
    ...(config.username === '' ? {} : { auth: { username: config.username, password: config.password } }),
    ...(tls === undefined ? {} : { credentials: { rootCertificate: read(tls.ca) ?? Buffer.alloc(0), privateKey: read(tls.key), certChain: read(tls.cert) } }),
    defaultCallOptions: (ctx) => ctx.isStream ? {} : { deadline: Date.now() + CALL_MS },
    // The client would otherwise retry a failed call three times and hold a host off for 5 s after three
    // failures: a commit must fail within its deadline, and connectivity must show when etcd is back.
    faultHandling: { host: () => noop, global: noop, watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }).next() },
  }
}

/**
 * The store a fleet shares: every replica loads from, commits to and watches
 * the keys under one prefix (see docs: P/state, P/events/, P/noise/,
 * P/replicas/, P/leader). EtcdFleet (etcd-fleet.ts) runs on its client and watch.
 */
export class EtcdStore implements StateStore {
  readonly kind = 'etcd'
  readonly where: string
  readonly events: EventSink
  /** @internal The client, shared with EtcdFleet. */
  readonly client: Etcd3
  readonly prefix: string
  readonly replicaId: string
  /** @internal Registered replicas as last read or watched (EtcdFleet reads it). */
  readonly replicaMap = new Map<string, ReplicaEntry>()
  /** @internal The holder of P/leader as last read or watched. */
  leaderKey: LeaderKey | null = null
  /** @internal The lease noise events are written under (this replica's registration, once it has one). */
  noiseLease: string | undefined
  /** @internal Called after the replica records or the leader key changed. */
  onFleetKeys: () => void = () => {}
  /** @internal Called by close(), before the client closes (EtcdFleet stops its timers and keepalive). */
  onClose: () => void = () => {}

  private readonly config: EtcdConfig
  private readonly endpoints: string
  private readonly changes = new EventRing()
  private readonly noise = new EventRing()
  /** Noise puts, one at a time so their ids (revisions) follow the order they were appended in. */
  private noiseWrites: Promise<void> = Promise.resolve()
  private noiseSeq = 0
  private connected = false
  private everConnected = false
  /** The revision of the last state applied: loaded, committed here, or delivered by the watch. */
  private delivered = 0
  /** The last full read of the prefix: its revision, and the state's revision in it. */
  private readAt = 0
  private stateAtRead = 0
  private watcher: Watcher | undefined
  /**
   * Commits under way: watch responses wait for them, so a commit of this
   * replica's never arrives from the watch before its own answer says its revision.
   */
  private committing = 0
  private held: IWatchResponse[] = []
  /** The watch has brought every change of the prefix up to this revision. */
  private seen = 0
  /** Commits waiting for the watch to bring their revision (see seenUpTo). */
  private seenWaiters: Array<{ revision: number, wake: () => void }> = []
  private onChange: ((change: StoreChange) => void) | undefined
  private probe: NodeJS.Timeout | undefined
  private closed = false

  constructor (config: EtcdConfig, opts: { replicaId: string }) {
    this.config = config
    this.prefix = config.prefix
    this.replicaId = opts.replicaId
    this.endpoints = config.endpoints.join(',')
    this.where = `etcd ${this.endpoints} prefix ${config.prefix}`
    this.client = new Etcd3(clientOptions(config))
    this.events = {
      append: (input) => this.appendNoise(input),
      list: (since) => this.listEvents(since),
      flush: async () => { await this.noiseWrites },
    }
  }

  /** A key under the prefix: key('state'), key('events/000000000001'). */
  key (name: string): string {
    return `${this.prefix}/${name}`
  }

  private eventKey (generation: number): string {
    return this.key(`events/${pad(generation, 12)}`)
  }

  async load (): Promise<{ state: PersistedState | undefined, revision: number }> {
    const deadline = Date.now() + this.config.startTimeout
    for (;;) {
      try {
        const read = await this.readAll(Math.max(100, Math.min(CALL_MS, deadline - Date.now())))
        this.delivered = read.stateRevision
        this.setConnected(true)
        this.startProbe()
        return { state: read.state, revision: read.stateRevision }
      } catch (err) {
        if (err instanceof StateFileError) throw err
        const cause = causeOf(err)
        if (isAuthError(err)) throw new Error(`etcd at ${this.endpoints} (prefix ${this.prefix}) refused user ${JSON.stringify(this.config.username)}: ${cause}`)
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`cannot reach etcd at ${this.endpoints} (prefix ${this.prefix}) within ${this.config.startTimeout / 1000}s: ${cause}`)
        await sleep(Math.min(RETRY_MS, left))
      }
    }
  }

  /**
   * Reads every key under the prefix at one revision: the state (validated
   * like a state file), the change and noise events into the rings, the
   * replica records and the leader key (replacing what was known).
   */
  private async readAll (timeoutMs = CALL_MS): Promise<FullRead> {
    const res: IRangeResponse = await this.client.getAll().prefix(this.key('')).options({ deadline: Date.now() + timeoutMs }).exec()
    // etcd answered, whatever the values turn out to hold.
    this.setConnected(true)
    let state: PersistedState | undefined
    let stateRevision = 0
    this.replicaMap.clear()
    this.leaderKey = null
    for (const kv of res.kvs) {
      const name = kv.key.toString().slice(this.prefix.length + 1)
      if (name === 'state') {
        state = this.parseState(kv)
        stateRevision = Number(kv.mod_revision)
      } else {
        this.takeKey(name, kv, true)
      }
    }
    const revision = Number(res.header.revision)
    this.readAt = revision
    this.stateAtRead = stateRevision
    this.markSeen(revision)
    this.onFleetKeys()
    return { state, stateRevision, revision }
  }

  private parseState (kv: IKeyValue): PersistedState {
    return parseStateDocument(kv.value.toString(), `etcd key ${kv.key.toString()} at ${this.endpoints}`, ETCD_REMEDY)
  }

  /**
   * A key other than P/state, put (or deleted: `put` false): events go into
   * the rings, records and the leader key into what the fleet reads.
   * Returns whether a fleet key changed.
   */
  private takeKey (name: string, kv: IKeyValue, put: boolean): boolean {
    const slash = name.indexOf('/')
    const dir = slash < 0 ? name : name.slice(0, slash)
    if (dir === 'events' || dir === 'noise') {
      if (!put) return false
      const ev = this.parseEvent(kv)
      if (ev !== undefined) (dir === 'events' ? this.changes : this.noise).add(ev)
      return false
    }
    if (dir === 'replicas') {
      const id = name.slice(slash + 1)
      const record = put ? asReplicaRecord(this.parseJson<unknown>(kv), id) : undefined
      if (record === undefined) this.replicaMap.delete(id)
      else this.replicaMap.set(id, { record, lease: kv.lease })
      return true
    }
    if (name === 'leader') {
      this.leaderKey = put ? { id: kv.value.toString(), lease: kv.lease } : null
      return true
    }
    return false
  }

  private parseJson<T> (kv: IKeyValue): T | undefined {
    try {
      return JSON.parse(kv.value.toString()) as T
    } catch {
      log('warn', 'etcd value is not JSON; ignored', { key: kv.key.toString() })
      return undefined
    }
  }

  /** A stored event with its id, the revision it was written at. */
  private parseEvent (kv: IKeyValue): SwitchyardEvent | undefined {
    const ev = this.parseJson<SwitchyardEvent>(kv)
    return ev === undefined ? undefined : { ...ev, id: Number(kv.mod_revision) }
  }

  async commit (next: PersistedState, event: NewEvent, apply: (event: SwitchyardEvent) => void, opts: CommitOptions): Promise<number> {
    const stored = { ...event, time: new Date().toISOString() }
    const stateKey = this.key('state')
    const writes = [
      this.client.put(stateKey).value(JSON.stringify({ version: 1, ...next })),
      this.client.put(this.eventKey(next.generation)).value(JSON.stringify(stored)),
    ]
    const old = next.generation - EVENTS_KEPT
    const trim = old >= 0 ? [this.client.delete().key(this.eventKey(old))] : []
    let revision: number
    this.committing++
    try {
      revision = await this.commitTxn(stateKey, stored, apply, [...writes, ...trim], opts.base)
    } finally {
      if (--this.committing === 0) this.releaseWatch()
    }
    // Read your writes: GET /v1/events lists only what the watch has brought,
    // so the change is answered once its event is listed here too.
    await this.seenUpTo(revision)
    return revision
  }

  /**
   * Resolves once the watch has brought everything up to `revision`, or
   * after SEEN_WAIT_MS (a watch that is down or slow: the event is listed
   * when it catches up). At once when nothing watches.
   */
  private async seenUpTo (revision: number): Promise<void> {
    if (this.onChange === undefined || this.closed || this.seen >= revision) return
    await new Promise<void>((resolve) => {
      const waiter = { revision, wake: () => { clearTimeout(timer); resolve() } }
      const timer = setTimeout(() => {
        this.seenWaiters = this.seenWaiters.filter((w) => w !== waiter)
        // A watch that stalls without an error costs every change this second: say so.
        log('warn', `etcd watch did not bring this replica's change within ${SEEN_WAIT_MS} ms; it is answered now, and GET /v1/events lists it once the watch does`, { where: this.where, revision })
        resolve()
      }, SEEN_WAIT_MS)
      this.seenWaiters.push(waiter)
    })
  }

  /** The watch has brought everything up to `revision`: wakes the commits waiting for it. */
  private markSeen (revision: number): void {
    if (revision <= this.seen) return
    this.seen = revision
    if (this.seenWaiters.length === 0) return
    const waiting = this.seenWaiters
    this.seenWaiters = waiting.filter((w) => w.revision > revision)
    for (const w of waiting) if (w.revision <= revision) w.wake()
  }

  /**
   * The transaction. When another commit got in first, the else branch
   * reads the state that won and the newest change event (written in the
   * same transaction as that state), so the replica applies it as it would
   * from the watch: a flip as a flip (its guard, its sticky sessions).
   */
  private async commitTxn (stateKey: string, stored: NewEvent & { time: string }, apply: (event: SwitchyardEvent) => void, ops: Array<PutBuilder | DeleteBuilder>, base: number): Promise<number> {
    // A silent etcd would hold every queued change for the whole deadline in turn: while the probe says it is gone, refuse at once.
    if (!this.connected) throw storeUnavailable(`etcd at ${this.endpoints} is unreachable; nothing changed`)
    let res
    try {
      res = await this.client.if(stateKey, 'Mod', '==', base)
        .then(...ops)
        .else(this.client.get(stateKey), this.client.getAll().prefix(this.key('events/')).sort('Key', 'Descend').limit(1))
        .options({ deadline: Date.now() + CALL_MS })
        .commit()
    } catch (err) {
      throw this.unavailable(err)
    }
    this.setConnected(true)
    const revision = Number(res.header.revision)
    if (!res.succeeded) {
      const kv = res.responses[0]?.response_range?.kvs[0]
      if (kv === undefined) throw new SwitchyardError('state_write_failed', `etcd key ${stateKey} was deleted by someone else; nothing changed`, {})
      let state: PersistedState
      try {
        state = this.parseState(kv)
      } catch (err) {
        throw new SwitchyardError('state_write_failed', `${(err as Error).message} Nothing changed`, {})
      }
      const evKv = res.responses[1]?.response_range?.kvs[0]
      const event = evKv === undefined || evKv.mod_revision !== kv.mod_revision ? undefined : this.parseEvent(evKv)
      throw new StoreConflict({ state, revision: Number(kv.mod_revision), ...(event === undefined ? {} : { event }) })
    }
    const ev: SwitchyardEvent = { ...stored, id: revision }
    this.changes.add(ev)
    this.delivered = Math.max(this.delivered, revision)
    apply(ev)
    return revision
  }

  /** A call etcd did not answer: connectivity drops, and the caller gets a store_unavailable error. */
  private unavailable (err: unknown): SwitchyardError {
    this.setConnected(false)
    const cause = causeOf(err)
    // Unavailable: the request never reached etcd. A timeout may have landed; the watch brings it if so.
    const outcome = err instanceof GRPCUnavailableError ? 'nothing changed' : 'if it was applied after all, every replica picks it up from the watch'
    return storeUnavailable(`etcd at ${this.endpoints} is unreachable: ${cause}; ${outcome}`)
  }

  watch (from: number, onChange: (change: StoreChange) => void): void {
    this.onChange = onChange
    this.delivered = Math.max(this.delivered, from)
    // The last full read saw every key at readAt: when the caller holds that
    // state (or a later one), the watch need not replay what came before it.
    const start = this.readAt > 0 && from >= this.stateAtRead ? this.readAt : from
    this.startWatch(start)
  }

  /** One watcher on the prefix, for everything after `after`. */
  private startWatch (after: number): void {
    this.seen = after
    const w = this.client.watch().prefix(this.key('')).startRevision(String(after + 1)).watcher()
    w.on('data', (res) => {
      if (this.committing > 0) this.held.push(res)
      else this.takeWatch(res)
    })
    w.on('disconnected', () => {
      this.setConnected(false)
      // etcd3 resumes from the last header revision it saw, which on a
      // catch-up can be past events not yet delivered: resume from ours.
      w.request.start_revision = String(this.seen + 1)
    })
    w.on('error', (err) => this.watchCancelled(w, err))
    this.watcher = w
  }

  private releaseWatch (): void {
    const held = this.held
    this.held = []
    for (const res of held) this.takeWatch(res)
  }

  /** One watch response: events grouped by revision, in order; a state put becomes a change. */
  private takeWatch (res: IWatchResponse): void {
    if (res.events.length === 0) {
      // A progress notification: nothing under the prefix up to its revision remains unseen.
      this.markSeen(Number(res.header.revision))
      return
    }
    let fleet = false
    let i = 0
    while (i < res.events.length) {
      const revision = Number(res.events[i].kv.mod_revision)
      let state: IKeyValue | undefined
      let event: SwitchyardEvent | undefined
      for (; i < res.events.length && Number(res.events[i].kv.mod_revision) === revision; i++) {
        const { type, kv } = res.events[i]
        const name = kv.key.toString().slice(this.prefix.length + 1)
        if (name === 'state') {
          if (type === 'Put') state = kv
        } else if (name.startsWith('events/') && type === 'Put') {
          event = this.parseEvent(kv)
          if (event !== undefined) this.changes.add(event)
        } else {
          fleet = this.takeKey(name, kv, type === 'Put') || fleet
        }
      }
      if (state !== undefined && revision > this.delivered) this.deliver(state, revision, event)
      this.markSeen(revision)
    }
    if (fleet) this.onFleetKeys()
  }

  private deliver (kv: IKeyValue, revision: number, event?: SwitchyardEvent): void {
    let state: PersistedState
    try {
      state = this.parseState(kv)
    } catch (err) {
      log('error', 'etcd holds a state this replica cannot read; it stays on the last one', { error: (err as Error).message, revision })
      return
    }
    this.delivered = revision
    this.onChange?.({ state, revision, ...(event === undefined ? {} : { event }) })
  }

  /** etcd cancelled the watch (its revision was compacted away): read everything again and watch from there. */
  private watchCancelled (w: Watcher, err: Error): void {
    if (this.watcher !== w) return
    this.watcher = undefined
    log('warn', 'etcd watch cancelled; reading the whole state again', { where: this.where, error: err.message })
    void this.resync()
  }

  private async resync (): Promise<void> {
    while (!this.closed) {
      try {
        const read = await this.readAll()
        if (read.state !== undefined && read.stateRevision > this.delivered) {
          this.delivered = read.stateRevision
          // Its change event was written with it, and the read put it in the ring.
          const event = this.changes.items.find((e) => e.id === read.stateRevision)
          this.onChange?.({ state: read.state, revision: read.stateRevision, ...(event === undefined ? {} : { event }) })
        }
        this.startWatch(read.revision)
        return
      } catch (err) {
        if (err instanceof StateFileError) log('error', 'etcd holds a state this replica cannot read; it stays on the last one', { error: err.message })
        await sleep(RETRY_MS)
      }
    }
  }

  /** Logs each change after the first connection (which the start, or a CLI's answer, speaks for). */
  private setConnected (up: boolean): void {
    if (up === this.connected) return
    this.connected = up
    if (up && !this.everConnected) {
      this.everConnected = true
      return
    }
    log(up ? 'info' : 'warn', up ? 'etcd reachable again' : 'etcd unreachable: serving on the last state, changes are refused', { where: this.where })
  }

  /** Checks connectivity about every second, so a silent etcd shows as disconnected and a returning one as connected. */
  private startProbe (): void {
    if (this.probe !== undefined) return
    let busy = false
    this.probe = setInterval(() => {
      if (busy) return
      busy = true
      this.client.get(this.key('state')).options({ deadline: Date.now() + PROBE_MS }).exec()
        .then(() => this.setConnected(true), () => this.setConnected(false))
        .finally(() => { busy = false })
    }, PROBE_MS)
    this.probe.unref()
  }

  /**
   * A health or drain event, written in the order appended; it resolves with
   * the event and its id (the revision it was written at). It never rejects:
   * a failed write is logged, and the event (id 0) is only in the log lines.
   */
  private async appendNoise (input: NewEvent): Promise<SwitchyardEvent> {
    const stored = { ...input, time: new Date().toISOString() }
    const key = this.key(`noise/${this.replicaId}/${pad(this.noiseSeq++ % NOISE_SLOTS, 6)}`)
    const written = this.noiseWrites.then(async () => {
      if (!this.connected) throw new Error('etcd is unreachable')
      const put = this.client.put(key).value(JSON.stringify(stored))
      if (this.noiseLease !== undefined) put.lease(this.noiseLease)
      const res = await put.exec()
      const ev = { ...stored, id: Number(res.header.revision) }
      this.noise.add(ev)
      return ev
    }).catch((err: Error) => {
      log('warn', 'etcd event write failed', { where: this.where, type: input.type, error: err.message })
      return { ...stored, id: 0 }
    })
    this.noiseWrites = written.then(() => {})
    return await written
  }

  /**
   * Change and noise events newer than `since`, merged by id. While the
   * store watches, only up to the revision the watch has brought: another
   * replica's event of a lower id may still be on its way, and a poller with
   * ?since must not skip it.
   */
  private listEvents (since = 0): SwitchyardEvent[] {
    const horizon = this.onChange === undefined ? Infinity : this.seen
    return [...this.changes.items, ...this.noise.items].filter((ev) => ev.id > since && ev.id <= horizon).sort((a, b) => a.id - b.id)
  }

  status (): StoreStatus {
    return { kind: 'etcd', connected: this.connected, revision: this.delivered }
  }

  async replace (state: PersistedState, event: NewEvent): Promise<number> {
    const stateKey = this.key('state')
    for (let attempt = 1; ; attempt++) {
      let res: IRangeResponse
      try {
        res = await this.client.get(stateKey).exec()
      } catch (err) {
        throw this.unavailable(err)
      }
      const kv = res.kvs[0]
      // A stored state that does not parse is what an import may be fixing: only its generation counts.
      const stored = kv === undefined ? -1 : (this.parseJson<{ generation?: unknown }>(kv)?.generation ?? -1)
      const generation = Math.max(typeof stored === 'number' ? stored + 1 : 0, state.generation)
      try {
        return await this.commit({ ...state, generation }, { ...event, generation }, () => {}, { base: kv === undefined ? 0 : Number(kv.mod_revision) })
      } catch (err) {
        if (!(err instanceof StoreConflict) || attempt >= 10) throw err
      }
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.probe)
    for (const w of this.seenWaiters) w.wake()
    this.seenWaiters = []
    this.onClose()
    const w = this.watcher
    this.watcher = undefined
    if (w !== undefined) await Promise.race([w.cancel(), sleep(1000)]).catch(() => {})
    await this.events.flush()
    this.client.close()
  }
}

/** The coded error for an unreachable store (503). */
function storeUnavailable (message: string): SwitchyardError {
  return new SwitchyardError('store_unavailable', message, {})
}
