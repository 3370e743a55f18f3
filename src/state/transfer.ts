// `switchyard state export` / `state import`: the whole routing state of the
// configured store as the state file's JSON document, read or written without a
// running gateway, so a file store's state can move into etcd and back.

import type { Config } from '../config/schema.js'
import { parseStateDocument, StateFileError, type PersistedState } from './file-store.js'
import type { StateStore } from './store.js'

/** The document export writes and import reads: the state file's format (version 1). */
export interface StateDocument extends PersistedState {
  version: 1
}

/** The state the store holds, as a document; throws when it holds none yet. */
export async function exportState (store: StateStore): Promise<StateDocument> {
  const { state } = await store.load()
  if (state === undefined) throw new Error(`${store.where} holds no state yet: nothing to export`)
  // All the store holds, as it holds it, so a field the state gains is exported with it (the load gives only stored fields).
  return { version: 1, ...state }
}

/** Reads a document by the state file's rules; a problem is named with `where`. */
export function parseDocument (text: string, where: string): PersistedState {
  return parseStateDocument(text, where, '')
}

export interface ImportOptions {
  /** Take services the config does not define too (they stay in the state, unrouted). */
  force: boolean
  reason: string | null
  actor: string
}

/**
 * Replaces the store's state with `state`, which the store writes at a
 * generation above the one it holds so every replica applies it. Services the
 * config does not define are refused unless forced: a typo would otherwise
 * land silently. Resolves with the generation before and after.
 */
export async function importState (store: StateStore, config: Config, state: PersistedState, opts: ImportOptions): Promise<{ before: number | undefined, generation: number }> {
  const unknown = Object.keys(state.services).filter((name) => config.services[name] === undefined)
  if (unknown.length > 0 && !opts.force) {
    const named = config.file === undefined ? 'the config' : `the config ${config.file}`
    throw new Error(`${named} does not define ${unknown.length === 1 ? 'service' : 'services'} ${unknown.join(', ')}; nothing imported (--force imports ${unknown.length === 1 ? 'it' : 'them'} anyway)`)
  }
  // Read first: it connects (etcd: with a bounded retry and an error naming the endpoint) before anything is written.
  // A stored state that cannot be read is what an import may be repairing: only reaching the store counts.
  const before = await readable(store)
  const generation = await store.replace(state, { type: 'import', generation: 0, reason: opts.reason, actor: opts.actor })
  return { before: before?.generation, generation: (await readable(store))?.generation ?? generation }
}

/** The store's state; undefined when it holds none, or one that does not pass the state file's rules. */
async function readable (store: StateStore): Promise<PersistedState | undefined> {
  try {
    return (await store.load()).state
  } catch (err) {
    if (err instanceof StateFileError) return undefined
    throw err
  }
}
