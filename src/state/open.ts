// STUB for the cli branch only (the lead's src/state/open.ts replaces it on merge):
// openStore() with just enough of a file store for `state export` / `state import`.

import type { Config } from '../config/schema.js'
import { FileStateStore, type PersistedState } from './file-store.js'
import type { StateStore } from './store.js'

/** The store the config names: here only the state file; the lead's version adds etcd. */
export function openStore (config: Config): StateStore {
  if (config.state.etcd !== undefined) throw new Error('the etcd store is not in this build yet')
  const file = new FileStateStore(config.state.file)
  const unsupported = (): never => { throw new Error('not in the stub store') }
  let current: PersistedState | undefined
  return {
    kind: 'file',
    where: `state file ${config.state.file}`,
    events: { append: unsupported, list: () => [], flush: async () => {} },
    load: async () => {
      current = await file.load()
      return { state: current, revision: current?.generation ?? 0 }
    },
    commit: unsupported,
    watch: unsupported,
    status: () => ({ kind: 'file', connected: true, revision: current?.generation ?? 0 }),
    replace: async (state) => {
      const stored = await file.load()
      const generation = Math.max(state.generation, (stored?.generation ?? -1) + 1)
      await file.save({ ...state, generation })
      current = { ...state, generation }
      return generation
    },
    close: async () => {},
  }
}
