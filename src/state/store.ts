// The state-store boundary: where routing state and the change events live,
// and what "committed" means. The controller stays the one writer in its
// process; a store decides durability (the file store: fsync and rename; the
// etcd store: a transaction conditioned on the revision the change was built
// from) and, for a fleet, tells every replica about changes the others made.

import type { Color } from '../config/schema.js'
import type { PersistedState } from './file-store.js'
import type { NewEvent, SwitchyardEvent } from './events.js'

export type StoreKind = 'file' | 'etcd'

/** What GET /v1/state shows as `store`, and what the store metrics read. */
export interface StoreStatus {
  kind: StoreKind
  /** The file store is always connected; the etcd store while its client reaches a member. */
  connected: boolean
  /** The etcd revision of the state this replica has applied (the file store: its generation). */
  revision: number
}

/**
 * Requests and errors one replica has answered per service and color since it
 * started; `latency`, while a release samples the color, is its latency
 * histogram as sparse [bucket, count, ...] (LatencyHistogram.toSparse).
 */
export type ColorCounts = Record<string, Partial<Record<Color, { requests: number, errors: number, latency?: number[] }>>>

/** One replica as registered in the store (under its lease, for etcd). */
export interface ReplicaRecord {
  id: string
  /** Its admin URL as other replicas and operators reach it; null when not advertised. */
  admin: string | null
  /** The generation and revision of the routing state it has applied. */
  generation: number
  revision: number
  /** When it last wrote this record (ISO time). */
  heartbeat: string
  counts: ColorCounts
}

/** A change some writer committed, as the store delivers it to every replica. */
export interface StoreChange {
  state: PersistedState
  /** The etcd revision of the commit; changes arrive in revision order. */
  revision: number
  /** The change event committed with it (absent only when the store no longer holds it). */
  event?: SwitchyardEvent
}

/** What the store's event log offers the controller and GET /v1/events. */
export interface EventSink {
  /**
   * Health and drain events, written without waiting (a failed write is only
   * logged). The file log returns the event at once; a store that numbers
   * events itself (etcd: by revision) resolves once it is written.
   */
  append: (input: NewEvent) => SwitchyardEvent | Promise<SwitchyardEvent>
  /** Events newer than `since`, oldest first. */
  list: (since?: number) => SwitchyardEvent[]
  /** Resolves once every event appended so far is written (or has failed). */
  flush: () => Promise<void>
}

/** Another writer committed first; `current` is the state now in the store, to apply and plan again on. */
export class StoreConflict extends Error {
  readonly current: StoreChange
  constructor (current: StoreChange) {
    super(`the state changed in the store (now revision ${current.revision}, generation ${current.state.generation})`)
    this.name = 'StoreConflict'
    this.current = current
  }
}

export interface CommitOptions {
  /** The revision of the state `next` was built from: the commit happens only if the store is still there. */
  base: number
  /**
   * The file store only: swap first, persist after (the guard's auto-revert,
   * where every moment on the failing color costs requests). A store that
   * must condition the write applies after the commit regardless.
   */
  applyFirst?: boolean
}

export interface StateStore {
  readonly kind: StoreKind
  /** Names the store in messages: `state file /data/state.json`, `etcd http://127.0.0.1:2379 prefix /switchyard/prod`. */
  readonly where: string
  readonly events: EventSink

  /**
   * Connects (etcd: with a bounded retry, then a clear error naming the
   * endpoint) and reads the state to start on, with the revision it was read
   * at; `state` is undefined when the store holds none yet. Anything
   * unreadable throws: a replica that has not read the state must not guess it.
   */
  load: () => Promise<{ state: PersistedState | undefined, revision: number }>

  /**
   * Commits `next` (one generation on from the state at `opts.base`) with its
   * change event, and calls `apply` with the event as stored (its id
   * assigned) at the moment the change counts as committed; resolves with
   * the new revision once it is durable. Rejects, with nothing changed and
   * `apply` not called, with a StoreConflict when another writer got there
   * first, or a SwitchyardError (`store_unavailable`, `state_write_failed`,
   * `event_write_failed`) when the store cannot take it.
   */
  commit: (next: PersistedState, event: NewEvent, apply: (event: SwitchyardEvent) => void, opts: CommitOptions) => Promise<number>

  /**
   * Changes committed by other replicas (and this one's, which the controller
   * recognizes by revision), in revision order, after `revision`; after a
   * disconnect the store resumes from the last revision it delivered, and
   * when etcd has compacted that away it reads the whole state again.
   * The file store has no other writer and never calls it.
   */
  watch: (from: number, onChange: (change: StoreChange) => void) => void

  status: () => StoreStatus

  /**
   * Writes a whole state (state import): unconditional, at a generation
   * above the one stored, so every replica applies it. Returns the revision.
   */
  replace: (state: PersistedState, event: NewEvent) => Promise<number>

  close: () => Promise<void>
}

/** The fleet as this replica sees it. A lone gateway (the file store) is a fleet of one that always leads. */
export interface Fleet {
  readonly id: string
  /**
   * Registers this replica (etcd: under a lease) with the admin URL others
   * reach it on (`fleet.advertise`, else the admin listener's own address),
   * and starts the election.
   */
  join: (admin: string | null) => Promise<void>
  /** Every registered replica, this one included, as last heard. */
  replicas: () => ReplicaRecord[]
  /** Called whenever a replica's record appears, changes or goes. */
  onReplicas: (fn: () => void) => void
  /** This replica applied a new state, or its counts moved: its record is written (at once for a new generation, else about every second). */
  report: (record: Pick<ReplicaRecord, 'generation' | 'revision'>, counts: () => ColorCounts) => void
  /** The id of the replica that runs the guard; null while there is none. */
  leader: () => string | null
  readonly isLeader: boolean
  /** Called when this replica gains or loses the lead. */
  onLeadership: (fn: (leading: boolean) => void) => void
  leave: () => Promise<void>
}
