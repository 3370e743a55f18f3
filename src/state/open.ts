// Which store a config asks for: etcd when `state.etcd` is set, else the state
// file with the event log beside it; and the fleet that goes with it.

import { dirname, join } from 'node:path'
import type { Config } from '../config/schema.js'
import { EtcdFleet } from './etcd-fleet.js'
import { EtcdStore } from './etcd-store.js'
import { EventLog } from './events.js'
import { FileStateStore } from './file-store.js'
import { LocalFleet, LocalStore } from './local-store.js'
import type { Fleet, StateStore } from './store.js'

export function openStore (config: Config): StateStore {
  if (config.state.etcd !== undefined) return new EtcdStore(config.state.etcd, { replicaId: config.fleet.id })
  return new LocalStore(new FileStateStore(config.state.file), new EventLog(join(dirname(config.state.file), 'events.jsonl')))
}

/** The fleet this replica belongs to through `store`: a fleet of one for the file store. */
export function openFleet (config: Config, store: StateStore): Fleet {
  if (store instanceof EtcdStore) return new EtcdFleet(store, config.fleet)
  return new LocalFleet(config.fleet.id)
}
