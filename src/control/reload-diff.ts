// What a re-read config changes against the one in force: the fields only a
// restart can apply, the services added, removed or updated, and admin access.

import type { Config } from '../config/schema.js'

export interface ConfigDiff {
  /** Fields a reload refuses to change. */
  restart: string[]
  added: string[]
  removed: string[]
  updated: string[]
  tokenChanged: boolean
  hostsChanged: boolean
}

export function diffConfigs (before: Config, after: Config): ConfigDiff {
  // What the listeners and the state store were built with at start; the edge keeps its engine, deadlines and trust until a restart.
  const restart: string[] = ([
    ['listen', after.listen, before.listen], ['admin.listen', after.admin.listen, before.admin.listen],
    ['state.file', after.state.file, before.state.file], ['state.etcd', after.state.etcd, before.state.etcd], ['fleet', after.fleet, before.fleet], ['log', after.log, before.log], ['metrics', after.metrics, before.metrics],
    ['engine', after.engine, before.engine], ['client', after.client, before.client], ['trustedProxies', after.trustedProxies, before.trustedProxies],
    // Every snapshot and the span exporter are built with them; turning either on or off mid-run would leave chains half pinned.
    ['pinning', after.pinning, before.pinning], ['tracing', after.tracing, before.tracing],
  ] as const)
    .filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b)).map(([k]) => k)
  // The listener is TLS or plain from its start; its certificate files and minVersion a reload does apply.
  if ((after.tls === undefined) !== (before.tls === undefined)) restart.push(after.tls === undefined ? 'tls (turning TLS off)' : 'tls (turning TLS on)')
  // The redirect listener is bound at start, like the others.
  if (JSON.stringify(after.redirect) !== JSON.stringify(before.redirect)) restart.push('redirect')
  const was = before.services
  const is = after.services
  return {
    restart,
    added: Object.keys(is).filter((n) => was[n] === undefined),
    removed: Object.keys(was).filter((n) => is[n] === undefined),
    updated: Object.keys(is).filter((n) => was[n] !== undefined && JSON.stringify(was[n]) !== JSON.stringify(is[n])),
    tokenChanged: after.admin.token !== before.admin.token,
    hostsChanged: JSON.stringify(after.admin.allowedHosts) !== JSON.stringify(before.admin.allowedHosts),
  }
}
