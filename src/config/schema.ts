// The config schema: the resolved types every other module consumes, and the
// one DEFAULTS object. Each field says its default next to its type.

export type Color = 'blue' | 'green'
export const COLORS: readonly Color[] = ['blue', 'green']

export function otherColor (color: Color): Color {
  return color === 'blue' ? 'green' : 'blue'
}

export function isColor (value: unknown): value is Color {
  return value === 'blue' || value === 'green'
}

export type Engine = 'fast' | 'node'

export interface HostPort {
  host: string
  port: number
}

export interface Timeouts {
  /** TCP (and TLS) connect to a target, ms. Default 2s. Exceeded: 502 upstream_connect_failed. */
  connect: number
  /** Request sent to response headers received, ms. Default 30s. Exceeded: 504 upstream_timeout. */
  response: number
  /** An idle upstream keep-alive connection is closed after this, ms. Default 60s. */
  idleUpstream: number
  /**
   * Longest silence within an upstream's response body once its head has
   * come, ms, on every engine. Default unset: none (a server-sent event
   * stream or a long poll may be quiet as long as it likes). Exceeded: the
   * response is cut and counts as an upstream timeout.
   */
  body?: number
}

/** Caps on what one process opens to one upstream target. */
export interface LimitsConfig {
  /**
   * Connections one process keeps open (busy or idle) to one target, per
   * engine. A request that finds them all busy waits for one (FIFO) up to
   * `timeouts.connect`, then gets 503 upstream_overloaded. Default 1024.
   */
  maxConnections: number
}

/** Deadlines on the client side of the public listener. */
export interface ClientTimeouts {
  /** A request head must be whole this long after its first byte, ms. Default 60s. Exceeded: 408 and close. */
  header: number
  /** An idle keep-alive client connection is closed after this, ms. Default 65s. */
  idle: number
  /** Longest silence between two reads of a request body, ms (nginx's client_body_timeout). Default 60s. Exceeded: 408 (or the connection cut when the answer has begun). */
  body: number
}

export interface HealthConfig {
  /** Path probed with GET. Default /healthz. */
  path: string
  /**
   * Probe with grpc.health.v1.Health/Check over HTTP/2 instead of GET `path`,
   * asking about this service name ('' : the server as a whole). Needs the
   * service's protocol to be h2c or h2. Default unset: HTTP probes.
   */
  grpc?: { service: string }
  /** Time between probes of one target, ms. Default 2s. */
  interval: number
  /** Hard deadline of one probe, ms. Default 1s. */
  timeout: number
  /** Passes in a row that make a target healthy. Default 2. */
  healthyThreshold: number
  /** Failures in a row that make a target unhealthy. Default 3. */
  unhealthyThreshold: number
  /** Statuses that count as a pass. Default empty: any 2xx. */
  expectStatus: number[]
  /** Serve a new target before its first probe ("healthy until proven otherwise"). Default false: unknown targets get no traffic. */
  assumeHealthy: boolean
  /**
   * Panic mode, in percent: when fewer than this share of a color's targets
   * are healthy, spread traffic over all of them (as Envoy does). Default 0: off.
   */
  panicThreshold: number
}

export interface PassiveConfig {
  /** Failures in a row (connect failure, reset, timeout, 5xx) that eject a target. Default 5. */
  consecutiveFailures: number
  /** First ejection lasts this long; each further one in a row doubles it, ms. Default 30s. */
  baseEjectionTime: number
  /** Upper bound of one ejection, ms. Default 300s. */
  maxEjectionTime: number
}

export interface GateConfig {
  /** A flip needs at least this many healthy targets in the new color. Default 1. */
  minHealthy: number
  /** Share (0..1) of shadow pairs that differ (noise excluded) above which a flip into the idle color is refused. Default off (undefined). */
  maxShadowDiff?: number
  /** The shadow share is judged only over at least this many compared pairs. Default 200. */
  minShadowCompared: number
}

/** Methods that change nothing on the server (RFC 9110 9.2.1): the only ones shadow traffic copies without `unsafe`. */
export const SAFE_METHODS: readonly string[] = ['GET', 'HEAD', 'OPTIONS']

/**
 * Shadow traffic (shadow/): a sample of the live color's requests is copied
 * to the idle color after the live answer went out, and the two answers
 * compared. Off unless a service has a `shadow` section (or the admin API
 * starts it).
 */
export interface ShadowConfig {
  /** Share (0 < sample <= 1) of the live color's requests whose method is listed that are copied. */
  sample: number
  /** Methods copied, upper case. Default GET, HEAD. Anything but GET, HEAD and OPTIONS needs `unsafe`. */
  methods: string[]
  /** Allows methods that change state (POST, PUT, DELETE, PATCH...): the copy repeats the side effect on the idle color, and on any store both colors share. Default false. */
  unsafe: boolean
  ignore: {
    /** Response header names (lower case) never compared, besides the ones always left out (date, connection, keep-alive, content-length, transfer-encoding). Default none. */
    headers: string[]
    /** JSON paths (the subset in shadow/jsonpath.ts) never compared in JSON bodies. Default none. */
    json: string[]
  }
  /** JSON member names (any depth, case, `-` and `_` aside) whose values no example shows, besides the built-in secret names (shadow/compare.ts SECRET_MEMBERS). Default none. */
  redact: string[]
  /** Answers larger than this (bytes) are compared by status and headers only, and counted so. Default 64 KiB. */
  maxBody: number
  /** Copies in flight at once per service (gateway process); above it a copy is dropped and counted. Default 32. */
  maxConcurrent: number
  /** A copy not answered whole within this is dropped and counted, ms. Default 5s. */
  timeout: number
  /** Share of copied requests also sent a second time to the live color, to learn which differences are noise. Default 0.1. */
  noise: number
  /** The first this-many copies of a comparison (after a start, a flip or new idle targets) are all sent twice, so noise is learnt early. Default 20. */
  learn: number
}

export interface GuardConfig {
  /** How long after a flip the new live color is watched, ms. Default 60s. */
  window: number
  /** Error share (5xx and gateway errors) above which the flip is reverted. Default 0.05. */
  maxErrorRate: number
  /** The error rate is judged only over at least this many requests. Default 20. */
  minRequests: number
}

export interface DrainConfig {
  /** After a flip, the old color's leftovers are closed after this, ms. Default 30s. */
  timeout: number
  /** URL that gets a POST of the `drained` event (retried with backoff). Default unset. */
  onDrained?: string
}

export interface SmokeCheck {
  /** HTTP method. Default GET. */
  method: string
  /** Path (with optional query) sent to the new color. Required. */
  path: string
  /** Extra request headers. Default none. */
  headers: Record<string, string>
  /** Expected response status. Default 200. */
  expectStatus: number
  /** When set, the response body must contain this text. Default unset. */
  bodyContains?: string
}

export interface Environment {
  /** Upstream origins (`http://` or `https://`, no path). Default none. */
  targets: string[]
}

/** How a release judges its new color against the old one (`verify` under `defaults` or a service; a release's request overrides it). */
export interface VerifyConfig {
  /** How long the new color serves all traffic before the release is done with it. Default 60s. */
  window: number
  /** The error rate may grow by this much (a fraction: 0.01 is one percentage point) before it counts as worse. Default 0.01. */
  maxErrorRateIncrease: number
  /** Latency may grow by this fraction (0.2 is 20%) before it counts as worse. Default 0.2. */
  maxLatencyIncrease: number
  /** ...and by at least this much, ms: below it a difference is noise on any host, whatever the fraction. Default 5ms. */
  latencyFloor: number
  /** Answers each color needs in a window before a test is made (fewer: inconclusive). Default 100. */
  minRequests: number
}

/** How a service's targets are spoken to: HTTP/1.1, HTTP/2 in clear text (prior knowledge), or HTTP/2 over TLS. */
export type UpstreamProtocol = 'http1' | 'h2c' | 'h2'

export interface ServiceConfig {
  name: string
  /** HTTP/1.1 (default), or HTTP/2 to the targets (gRPC needs it): `h2c` for http:// targets, `h2` for https://. */
  protocol: UpstreamProtocol
  /** Route: optional exact host (port ignored) and a path prefix on whole segments. Default prefix `/`. */
  match: { host?: string, pathPrefix: string }
  /** Initial live color; the state file wins once it exists. Default blue. */
  live: Color
  blue: Environment
  green: Environment
  /** Testers reach a named color with this header or cookie. Default off. */
  preview?: { header?: string, cookie?: string }
  /** Pin sessions to a color while it drains. Default off. */
  sticky?: { cookie: string }
  /** Checks a flip runs against the new color first. Default none. */
  smoke: SmokeCheck[]
  /** Shadow traffic to the idle color, compared with the live answers. Default off. */
  shadow?: ShadowConfig
  timeouts: Timeouts
  /** Active health probes: on when `defaults.health` or the service's `health` is set (missing fields from DEFAULTS); `health: false` turns them off. Off: targets count as healthy. */
  health?: HealthConfig
  /** Passive health (outlier ejection). Default on; `passive: false` turns it off. */
  passive?: PassiveConfig
  gate: GateConfig
  guard: GuardConfig
  verify: VerifyConfig
  drain: DrainConfig
  limits: LimitsConfig
}

/** The TLS versions a listener may be held to, oldest first. */
export type TlsVersion = 'TLSv1.2' | 'TLSv1.3'
export const TLS_VERSIONS: readonly TlsVersion[] = ['TLSv1.2', 'TLSv1.3']

/** One certificate of the public listener, as absolute paths of PEM files. */
export interface CertFiles {
  /** The certificate, then any intermediates it needs (leaf first). Required. */
  cert: string
  /** Its private key, unencrypted. Required. */
  key: string
}

export interface TlsConfig {
  /**
   * Certificates, each chosen by SNI for the names it holds (subjectAltName
   * DNS names, exact or `*.` wildcard); the first also answers any other
   * name and clients that send none. At least one.
   */
  certs: CertFiles[]
  /** Oldest TLS version a client may use. Default TLSv1.2. */
  minVersion: TlsVersion
}

export interface Config {
  /** Absolute path of the file this came from (relative paths resolve against its folder). */
  file?: string
  /** Public listener for HTTP and WebSocket traffic. Default 0.0.0.0:8080. */
  listen: HostPort
  /** When set, the public listener speaks TLS with these certificates. Default unset: plain HTTP. */
  tls?: TlsConfig
  /** When set (with `tls`), a plain HTTP listener here answers every request with a 308 to https. Default unset. */
  redirect?: { listen: HostPort }
  /**
   * How the public listener forwards HTTP/1.1. `fast`: raw sockets both ways,
   * handing what it does not take (HTTP/1.0, chunked uploads, Expect,
   * WebSocket upgrades, odd heads) to node:http. `node`: node:http and undici
   * for everything. Default fast.
   */
  engine: Engine
  /**
   * Peers (IP addresses or CIDR blocks, IPv4 or IPv6) whose X-Forwarded-* and
   * Forwarded headers are kept and extended; from anyone else they are
   * replaced by what the gateway saw. Default none.
   */
  trustedProxies: string[]
  /** Client-side deadlines of the public listener. */
  client: ClientTimeouts
  admin: {
    /** Admin API, metrics and dashboard. Default 127.0.0.1:9901. */
    listen: HostPort
    /** Bearer token; required when admin.listen is not loopback. Default empty (no auth). */
    token: string
    /** Host names (with or without port) the admin API answers to besides its own addresses (DNS rebinding defence). Default none. */
    allowedHosts: string[]
  }
  state: {
    /** Live colors and generation survive restarts here. Default ./data/state.json. */
    file: string
    /** When set, routing state and the change events live in etcd instead, shared by every replica on the same prefix. */
    etcd?: EtcdConfig
  }
  fleet: FleetConfig
  log: {
    /** Access log: `true` for stdout, `false` for none, or a file path. Default true. */
    access: boolean | string
  }
  metrics: {
    /** Per-request metric bookkeeping and GET /metrics. Default true. */
    enabled: boolean
  }
  /** Generation-pinned call chains (README, "Call chains that never mix colors"); off when absent. */
  pinning?: PinningConfig
  /** OpenTelemetry span export; off when absent. */
  tracing?: TracingConfig
  services: Record<string, ServiceConfig>
}

/**
 * `pinning`: every forwarded request carries the W3C baggage entry
 * `switchyard-gen=N` (the generation that routed it), and a request that
 * carries one from a `trust` address is routed by snapshot N while it is kept.
 */
export interface PinningConfig {
  /** How long a snapshot stays kept after it stopped being current. Default 5m. */
  keep: number
  /** Peers (IP addresses or CIDR blocks) whose `switchyard-gen` entry is believed: the services' own addresses. Required. */
  trust: string[]
}

/** `tracing`: a span per forwarded request, exported over OTLP/HTTP (JSON). */
export interface TracingConfig {
  /** Where spans are POSTed: an http(s) URL; a URL with no path gets `/v1/traces` (the OTLP/HTTP default). */
  otlp: string
  /** The `service.name` resource attribute of the spans. Default switchyard. */
  serviceName: string
  /** Share of traces the gateway starts (no sampled `traceparent` came in) that are exported, 0..1. Default 1. */
  sample: number
}

export interface EtcdConfig {
  /** etcd v3 client URLs (http:// or https://). */
  endpoints: string[]
  /** Every key of this fleet lives under it; it starts with / and does not end with one. */
  prefix: string
  /** Empty: no authentication. */
  username: string
  password: string
  /** PEM files for an https:// etcd: the CA to trust, and a client certificate and key. */
  tls?: { ca?: string, cert?: string, key?: string }
  /** How long a starting replica keeps trying to reach etcd and read the state before it exits. Default 10s. */
  startTimeout: number
}

export interface FleetConfig {
  /** This replica's id in the fleet. Default host:pid. */
  id: string
  /** This replica's admin URL as other replicas and operators reach it. Default none. */
  advertise: string | null
  /** The registration and leader lease: a replica that dies leaves the fleet, and hands over the guard, within it. Default 5s. */
  leaseTtl: number
}

export interface ServiceDefaults {
  timeouts: Timeouts
  health: HealthConfig
  passive: PassiveConfig
  gate: GateConfig
  guard: GuardConfig
  verify: VerifyConfig
  drain: DrainConfig
  limits: LimitsConfig
}

/** Every default, in one place. */
export const DEFAULTS = {
  listen: '0.0.0.0:8080',
  tls: { minVersion: 'TLSv1.2' as TlsVersion },
  engine: 'fast' as Engine,
  trustedProxies: [] as string[],
  client: { header: 60_000, idle: 65_000, body: 60_000 } satisfies ClientTimeouts,
  admin: { listen: '127.0.0.1:9901', token: '', allowedHosts: [] as string[] },
  state: { file: './data/state.json' },
  etcd: { prefix: '/switchyard', startTimeout: 10_000 },
  fleet: { leaseTtl: 5_000 },
  log: { access: true },
  metrics: { enabled: true },
  pinning: { keep: 300_000 },
  tracing: { serviceName: 'switchyard', sample: 1 },
  shadow: {
    methods: ['GET', 'HEAD'],
    unsafe: false,
    maxBody: 64 * 1024,
    maxConcurrent: 32,
    timeout: 5_000,
    noise: 0.1,
    learn: 20,
  },
  service: {
    live: 'blue' as Color,
    pathPrefix: '/',
    smokeMethod: 'GET',
    smokeExpectStatus: 200,
  },
  defaults: {
    timeouts: { connect: 2_000, response: 30_000, idleUpstream: 60_000 },
    health: { path: '/healthz', interval: 2_000, timeout: 1_000, healthyThreshold: 2, unhealthyThreshold: 3, expectStatus: [] as number[], assumeHealthy: false, panicThreshold: 0 },
    passive: { consecutiveFailures: 5, baseEjectionTime: 30_000, maxEjectionTime: 300_000 },
    gate: { minHealthy: 1, minShadowCompared: 200 },
    guard: { window: 60_000, maxErrorRate: 0.05, minRequests: 20 },
    verify: { window: 60_000, maxErrorRateIncrease: 0.01, maxLatencyIncrease: 0.2, latencyFloor: 5, minRequests: 100 },
    drain: { timeout: 30_000 },
    limits: { maxConnections: 1024 },
  } satisfies ServiceDefaults,
} as const
