// Every key the config loader accepts, as one tree: the loader takes its
// allowed-key lists from here, and the docs test checks each path is documented.

/** A mapping's accepted keys, in the order errors list them: each leads to a nested mapping or holds a value (`true`). */
export interface KeyTree { readonly [key: string]: KeyTree | true }

/** Stands for a key the user chooses (a service name); its mapping takes any such key. */
const ANY_NAME = '<name>'
/** Stands for each item of a list of mappings (smoke checks). */
export const LIST_ITEM = '[]'

/** The per-service sections: accepted under `defaults` and under each service, which overrides them. */
export const SECTION_KEYS = {
  timeouts: { connect: true, response: true, idleUpstream: true, body: true },
  health: { path: true, grpc: true, interval: true, timeout: true, healthyThreshold: true, unhealthyThreshold: true, expectStatus: true, assumeHealthy: true, panicThreshold: true },
  passive: { consecutiveFailures: true, baseEjectionTime: true, maxEjectionTime: true },
  gate: { minHealthy: true, maxShadowDiff: true, minShadowCompared: true },
  guard: { window: true, maxErrorRate: true, minRequests: true },
  verify: { window: true, maxErrorRateIncrease: true, maxLatencyIncrease: true, latencyFloor: true, minRequests: true },
  drain: { timeout: true, onDrained: true },
  limits: { maxConnections: true },
} as const satisfies KeyTree

/** One smoke check; `headers` is a mapping of header names the user chooses. */
export const SMOKE_KEYS = { method: true, path: true, headers: true, expectStatus: true, bodyContains: true } as const satisfies KeyTree

/** One color of a service (`blue`, `green`). */
export const ENVIRONMENT_KEYS = { targets: true } as const satisfies KeyTree

export const SERVICE_KEYS = {
  match: { host: true, pathPrefix: true },
  protocol: true,
  live: true,
  blue: ENVIRONMENT_KEYS,
  green: ENVIRONMENT_KEYS,
  preview: { header: true, cookie: true },
  sticky: { cookie: true },
  smoke: { [LIST_ITEM]: SMOKE_KEYS },
  shadow: { sample: true, methods: true, unsafe: true, ignore: { headers: true, json: true }, redact: true, maxBody: true, maxConcurrent: true, timeout: true, noise: true, learn: true },
  ...SECTION_KEYS,
} as const satisfies KeyTree

/** One certificate of the public listener: PEM files. */
export const CERT_KEYS = { cert: true, key: true } as const satisfies KeyTree

export const CONFIG_KEYS = {
  listen: true,
  tls: { certs: { [LIST_ITEM]: CERT_KEYS }, minVersion: true },
  redirect: { listen: true },
  engine: true,
  trustedProxies: true,
  client: { headerTimeout: true, idleTimeout: true, bodyTimeout: true },
  admin: { listen: true, token: true, allowedHosts: true },
  state: {
    file: true,
    etcd: { endpoints: true, prefix: true, username: true, password: true, tls: { ca: true, cert: true, key: true }, startTimeout: true },
  },
  fleet: { id: true, advertise: true, leaseTtl: true },
  log: { access: true },
  metrics: { enabled: true },
  pinning: { keep: true, trust: true },
  tracing: { otlp: true, serviceName: true, sample: true },
  defaults: SECTION_KEYS,
  services: { [ANY_NAME]: SERVICE_KEYS },
} as const satisfies KeyTree

/** The keys a mapping accepts, as the loader's strict check wants them. */
export function listKeys (tree: KeyTree): readonly string[] {
  return Object.keys(tree)
}
