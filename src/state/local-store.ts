// The embedded store of a lone gateway: routing state in one JSON file and the
// event log in JSONL files beside it. Committed means both written and fsynced.
// Its fleet is this one replica, which always leads.

import { SwitchyardError } from '../errors.js'
import { log } from '../log.js'
import { EventLog, type NewEvent, type SwitchyardEvent } from './events.js'
import { FileStateStore, type PersistedState } from './file-store.js'
import type { ColorCounts, CommitOptions, Fleet, ReplicaRecord, StateStore, StoreStatus } from './store.js'

export class LocalStore implements StateStore {
  readonly kind = 'file'
  readonly where: string
  readonly events: EventLog
  private readonly file: FileStateStore
  private generation = 0
  private loaded = false

  constructor (file: FileStateStore, events: EventLog) {
    this.file = file
    this.events = events
    this.where = `state file ${file.file}`
  }

  /** The state file, and the event log restored to what it committed. The revision is the generation. */
  async load (): Promise<{ state: PersistedState | undefined, revision: number }> {
    const state = await this.file.load()
    // No state file is generation 0: a change event without one is of a first change killed before its state write.
    if (!this.loaded) await this.events.restore(state?.generation ?? 0)
    this.loaded = true
    this.generation = state?.generation ?? 0
    return { state, revision: this.generation }
  }

  /**
   * Two writes, each fsynced before the change counts: the event line first,
   * then the state file. The state file is the commit point: a crash (or a
   * failed state write) after the event leaves an event of a change that did
   * not happen, which EventLog.restore recognizes by its generation and
   * leaves out; the other order would leave a change in force whose event is
   * missing. A failed event write fails the change before anything else.
   *
   * With `applyFirst` the change is applied at once and persisted after:
   * should a write fail, routing stays on the known-good color and the next
   * change writes the file.
   */
  async commit (next: PersistedState, event: NewEvent, apply: (event: SwitchyardEvent) => void, opts: CommitOptions): Promise<number> {
    const prepared = this.events.prepare(event)
    const decided = (): void => {
      // First: the change is decided, and a prepared event left pending would hold back every later one.
      this.events.publish(prepared)
      this.generation = next.generation
      apply(prepared)
    }
    if (opts.applyFirst === true) {
      decided()
      await this.events.persist(prepared).catch((err: Error) => {
        log('error', 'events file write failed after an auto-revert; routing is reverted, the event is only in memory', { file: this.events.file, error: err.message })
      })
      await this.file.save(next).catch((err: Error) => {
        log('error', 'state file write failed after an auto-revert; routing is reverted, the file is behind', { file: this.file.file, error: err.message })
      })
      return next.generation
    }
    try {
      await this.events.persist(prepared)
    } catch (err) {
      this.events.discard(prepared)
      throw new SwitchyardError('event_write_failed', `could not append to ${this.events.file ?? 'the event log'}: ${(err as Error).message}; nothing changed`)
    }
    try {
      await this.file.save(next)
    } catch (err) {
      this.events.discard(prepared)
      throw new SwitchyardError('state_write_failed', `could not write ${this.file.file}: ${(err as Error).message}; nothing changed`)
    }
    decided()
    return next.generation
  }

  /** Nobody else writes the file. */
  watch (): void {}

  status (): StoreStatus {
    return { kind: 'file', connected: true, revision: this.generation }
  }

  /**
   * A state import: written at a generation above the file's, with its
   * event. Meant for a stopped gateway: a running one does not re-read the
   * file, and its next change writes over the import (README says so).
   */
  async replace (state: PersistedState, event: NewEvent): Promise<number> {
    if (!this.loaded) await this.load()
    const next = { ...state, generation: Math.max(state.generation, this.generation + 1) }
    await this.commit(next, { ...event, generation: next.generation }, () => {}, { base: this.generation })
    await this.events.flush()
    return next.generation
  }

  async close (): Promise<void> {
    await this.events.flush()
  }
}

/** A fleet of one: this replica, which always leads the guard. */
export class LocalFleet implements Fleet {
  readonly id: string
  readonly isLeader = true
  private admin: string | null = null
  private record: Pick<ReplicaRecord, 'generation' | 'revision'> = { generation: 0, revision: 0 }
  private counts: () => ColorCounts = () => ({})

  constructor (id: string) {
    this.id = id
  }

  async join (admin: string | null): Promise<void> {
    this.admin = admin
    await Promise.resolve()
  }

  replicas (): ReplicaRecord[] {
    return [{ id: this.id, admin: this.admin, ...this.record, heartbeat: new Date().toISOString(), counts: this.counts() }]
  }

  onReplicas (): void {}

  report (record: Pick<ReplicaRecord, 'generation' | 'revision'>, counts: () => ColorCounts): void {
    this.record = { ...record }
    this.counts = counts
  }

  leader (): string {
    return this.id
  }

  onLeadership (): void {}

  async leave (): Promise<void> {}
}
