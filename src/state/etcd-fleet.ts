// A fleet on etcd: each replica registers its record under a lease it keeps alive,
// and the replica whose lease holds P/leader leads (runs the guard) until it leaves or its lease lapses.

import { EtcdLeaseInvalidError, type Lease } from 'etcd3'
import type { FleetConfig } from '../config/schema.js'
import { log } from '../log.js'
import type { EtcdStore } from './etcd-store.js'
import type { ColorCounts, Fleet, ReplicaRecord } from './store.js'

/** How often the fleet checks its lease, re-registers, campaigns and rewrites its record. */
const TICK_MS = 250
/** A record is rewritten (fresh heartbeat and counts) about this often. */
const RECORD_MS = 1000
/** A leader whose lease was last renewed longer than its TTL less this ago stops leading. */
const STALE_MARGIN_MS = 500
/** The lease is renewed this many times per TTL. */
const KEEPALIVES_PER_TTL = 4

/**
 * This replica in a fleet sharing an EtcdStore's client and watch. The
 * election is one key, P/leader, created under the registration lease when
 * absent: whoever's lease holds it leads; when it goes (left, or the lease
 * expired) every replica tries to create it again.
 */
export class EtcdFleet implements Fleet {
  readonly id: string
  private readonly store: EtcdStore
  private readonly config: FleetConfig
  private lease: Lease | undefined
  private leaseId: string | undefined
  private lastKeepAlive = 0
  private registering = false
  private renewing = false
  private readonly failing = new Set<string>()
  private campaigning = false
  private leading = false
  private applied: Pick<ReplicaRecord, 'generation' | 'revision'> = { generation: 0, revision: 0 }
  private counts: () => ColorCounts = () => ({})
  private admin: string | null = null
  private written: { generation: number, at: number } = { generation: -1, at: 0 }
  private writing: Promise<void> | undefined
  private writeAgain = false
  private timer: NodeJS.Timeout | undefined
  private readonly replicaFns: Array<() => void> = []
  private readonly leadFns: Array<(leading: boolean) => void> = []

  constructor (store: EtcdStore, config: FleetConfig) {
    this.store = store
    this.config = config
    this.id = store.replicaId
    store.onFleetKeys = () => this.fleetKeysChanged()
    store.onClose = () => this.halt()
  }

  get isLeader (): boolean {
    return this.leading
  }

  private get ttlMs (): number {
    return this.config.leaseTtl
  }

  async join (admin: string | null): Promise<void> {
    this.admin = admin
    if (this.timer !== undefined) return
    this.timer = setInterval(() => this.tick(), TICK_MS)
    this.timer.unref()
    await this.register()
  }

  replicas (): ReplicaRecord[] {
    return [...this.store.replicaMap.values()].map((e) => e.record).sort((a, b) => a.id.localeCompare(b.id))
  }

  onReplicas (fn: () => void): void {
    this.replicaFns.push(fn)
  }

  report (record: Pick<ReplicaRecord, 'generation' | 'revision'>, counts: () => ColorCounts): void {
    this.applied = { generation: record.generation, revision: record.revision }
    this.counts = counts
    if (record.generation !== this.written.generation) this.writeRecord()
  }

  leader (): string | null {
    return this.store.leaderKey?.id ?? null
  }

  onLeadership (fn: (leading: boolean) => void): void {
    this.leadFns.push(fn)
  }

  async leave (): Promise<void> {
    const lease = this.lease
    this.halt()
    if (lease === undefined) return
    // Revoking deletes the record and P/leader at once: the others see it leave and one of them leads.
    await lease.revoke().catch((err: Error) => { log('warn', 'etcd lease revoke failed; it expires on its own', { error: err.message }) })
  }

  /** Stops every timer and the keepalive without revoking: the lease lapses on its own. */
  private halt (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.lease?.release()
    this.dropLease()
  }

  /** Grants a lease, writes the record under it and campaigns. A failure leaves it to the next tick. */
  private async register (): Promise<void> {
    if (this.registering || this.lease !== undefined || this.timer === undefined) return
    this.registering = true
    try {
      // Kept alive from this fleet's own tick: etcd3's keepalive loop can leave a timer behind after a partition.
      const lease = this.store.client.lease(this.ttlMs / 1000, { autoKeepAlive: false })
      // etcd counts the TTL from when it took the request: so does this replica, never from the answer.
      const sent = Date.now()
      const id = await lease.grant()
      if (this.timer === undefined) {
        lease.release()
        return
      }
      this.lease = lease
      this.leaseId = id
      this.lastKeepAlive = sent
      this.store.noiseLease = id
      this.writeRecord()
      await this.writing
      await this.campaign()
      this.failing.delete('registration')
    } catch (err) {
      this.failed('registration', err)
    } finally {
      this.registering = false
    }
  }

  /** Renews the lease, one renewal at a time; a lease etcd no longer has is dropped (the next tick registers anew). */
  private keepAlive (lease: Lease): void {
    if (this.renewing) return
    this.renewing = true
    const sent = Date.now()
    lease.keepaliveOnce({ deadline: Date.now() + this.ttlMs / KEEPALIVES_PER_TTL })
      .then((res) => {
        if (this.lease !== lease) return
        if (Number(res.TTL) > 0) this.lastKeepAlive = sent
        else this.dropLease()
      }, (err: Error) => {
        if (this.lease === lease && err instanceof EtcdLeaseInvalidError) this.dropLease()
      })
      .finally(() => { this.renewing = false })
  }

  /** The lease is gone (or cannot be trusted): no more leading; the next tick registers anew. */
  private dropLease (): void {
    this.lease?.release()
    this.lease = undefined
    this.leaseId = undefined
    this.store.noiseLease = undefined
    this.updateLeading()
  }

  /** Creates P/leader under this replica's lease, unless someone holds it. */
  private async campaign (): Promise<void> {
    const leaseId = this.leaseId
    if (this.campaigning || leaseId === undefined || this.store.leaderKey !== null) return
    this.campaigning = true
    try {
      const key = this.store.key('leader')
      const client = this.store.client
      const res = await client.if(key, 'Create', '==', 0)
        .then(client.put(key).value(this.id).lease(leaseId))
        .else(client.get(key))
        .commit()
      // The watch brings the same key; taking it now makes the lead known without waiting for it.
      if (res.succeeded) this.store.leaderKey = { id: this.id, lease: leaseId }
      this.failing.delete('election')
      this.fleetKeysChanged()
    } catch (err) {
      this.failed('election', err)
    } finally {
      this.campaigning = false
    }
  }

  private tick (): void {
    this.updateLeading()
    if (this.lease === undefined) {
      void this.register()
      return
    }
    if (Date.now() - this.lastKeepAlive >= this.ttlMs / KEEPALIVES_PER_TTL) this.keepAlive(this.lease)
    if (Date.now() - this.written.at >= RECORD_MS) this.writeRecord()
    if (this.store.leaderKey === null) void this.campaign()
  }

  /** Writes this replica's record now, or once more after the write under way. */
  private writeRecord (): void {
    if (this.writing !== undefined) {
      this.writeAgain = true
      return
    }
    this.writing = this.putRecord().finally(() => {
      this.writing = undefined
      if (this.writeAgain) {
        this.writeAgain = false
        this.writeRecord()
      }
    })
  }

  private async putRecord (): Promise<void> {
    const leaseId = this.leaseId
    if (leaseId === undefined) return
    const record: ReplicaRecord = {
      id: this.id,
      admin: this.admin,
      ...this.applied,
      heartbeat: new Date().toISOString(),
      counts: this.counts(),
    }
    this.written = { generation: record.generation, at: Date.now() }
    try {
      await this.store.client.put(this.store.key(`replicas/${this.id}`)).value(JSON.stringify(record)).lease(leaseId).exec()
      this.store.replicaMap.set(this.id, { record, lease: leaseId })
      this.failing.delete('record write')
      this.fleetKeysChanged()
    } catch (err) {
      this.failed('record write', err)
    }
  }

  /** Logs a kind of call failing once, until it works again: etcd being down is one line, not one per tick. */
  private failed (what: string, err: unknown): void {
    if (this.failing.has(what)) return
    this.failing.add(what)
    log('warn', `fleet ${what} in etcd failed; trying again`, { id: this.id, error: (err as Error).message })
  }

  private fleetKeysChanged (): void {
    this.updateLeading()
    if (this.store.leaderKey === null && this.lease !== undefined) void this.campaign()
    for (const fn of this.replicaFns) fn()
  }

  /**
   * Leading: P/leader is under this replica's lease, and that lease was
   * renewed recently enough that etcd cannot have let it expire (a lease not
   * renewed for most of its TTL may be gone: stop before another replica starts).
   */
  private updateLeading (): void {
    const fresh = this.lease !== undefined && Date.now() - this.lastKeepAlive < this.ttlMs - STALE_MARGIN_MS
    const leading = fresh && this.leaseId !== undefined && this.store.leaderKey?.lease === this.leaseId
    if (leading === this.leading) return
    this.leading = leading
    log('info', leading ? 'this replica leads the fleet' : 'this replica no longer leads the fleet', { id: this.id })
    for (const fn of this.leadFns) fn(leading)
  }
}
