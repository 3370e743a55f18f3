// Which store a config asks for: etcd when `state.etcd` is set, else the state
// file with the event log beside it; and the fleet that goes with it. The etcd
// client (and gRPC under it) is loaded only for a config that uses it.

import { dirname, join } from 'node:path'
import type { Config } from '../config/schema.js'
import { EventLog } from './events.js'
import { FileStateStore } from './file-store.js'
import { LocalFleet, LocalStore } from './local-store.js'
import type { Fleet, StateStore } from './store.js'

export async function openState (config: Config): Promise<{ store: StateStore, fleet: Fleet }> {
  if (config.state.etcd !== undefined) {
    const [{ EtcdStore }, { EtcdFleet }] = await Promise.all([import('./etcd-store.js'), import('./etcd-fleet.js')])
    const store = new EtcdStore(config.state.etcd, { replicaId: config.fleet.id })
    return { store, fleet: new EtcdFleet(store, config.fleet) }
  }
  const store = new LocalStore(new FileStateStore(config.state.file), new EventLog(join(dirname(config.state.file), 'events.jsonl')))
  return { store, fleet: new LocalFleet(config.fleet.id) }
}
