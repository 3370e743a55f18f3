// Config loading and validation (defaults, durations, ${VAR}, strictness, paths in
// every error) and the `switchyard validate FILE` command.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfigFile, parseConfig, type ConfigProblem } from '../src/config/load.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { isLoopback, parseDuration, parseHostPort, parseOrigin, substituteEnv } from '../src/config/values.js'
import { run } from '../src/commands.js'
import { tempDir } from './helpers/index.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** A minimal valid service block (two-space indent under `services:`). */
function svc (name: string, prefix: string, extra = '', port = 3001): string {
  return `  ${name}:
    match: { pathPrefix: ${prefix} }
    blue: { targets: [http://127.0.0.1:${port}] }
    green: { targets: [http://127.0.0.1:${port + 1}] }
${extra}`
}

const ONE = `services:\n${svc('users', '/api/users')}`

function parse (yaml: string, env: NodeJS.ProcessEnv = {}, file?: string): Config {
  return parseConfig(yaml, { env, ...(file === undefined ? {} : { file }) })
}

/** The problems a config yields; fails the test when it parses. */
function problemsOf (t: Tap, yaml: string, env: NodeJS.ProcessEnv = {}): ConfigProblem[] {
  try {
    parse(yaml, env)
  } catch (err) {
    t.type(err, ConfigError)
    return (err as ConfigError).problems
  }
  t.fail('expected a ConfigError')
  return []
}

/** Exactly one problem, at `path`, whose message matches `message`. */
function onlyProblem (t: Tap, yaml: string, path: string, message: RegExp, env: NodeJS.ProcessEnv = {}): void {
  const problems = problemsOf(t, yaml, env)
  t.equal(problems.length, 1, `one problem, got ${JSON.stringify(problems)}`)
  t.equal(problems[0]?.path, path)
  t.match(problems[0]?.message, message)
}

type Tap = typeof t

function capture (env: NodeJS.ProcessEnv = {}): { out: string[], err: string[], io: { out: (s: string) => void, err: (s: string) => void, env: NodeJS.ProcessEnv } } {
  const out: string[] = []
  const err: string[] = []
  return { out, err, io: { out: (s) => out.push(s), err: (s) => err.push(s), env } }
}

t.test('values: parseDuration', async (t) => {
  t.equal(parseDuration('500ms'), 500)
  t.equal(parseDuration('2s'), 2000)
  t.equal(parseDuration('1m'), 60_000)
  t.equal(parseDuration('1h'), 3_600_000)
  t.equal(parseDuration('1.5s'), 1500)
  t.equal(parseDuration('1.5m'), 90_000)
  t.equal(parseDuration(' 2s '), 2000, 'surrounding spaces ignored')
  t.equal(parseDuration('0s'), 0, 'parses; the loader rejects zero')
  for (const bad of ['2 seconds', '2', '', 's', '-1s', '.5s', '2S', '1d', '2s5ms', 'ms']) {
    t.equal(parseDuration(bad), undefined, `${JSON.stringify(bad)} is malformed`)
  }
})

t.test('values: parseHostPort and isLoopback', async (t) => {
  t.same(parseHostPort('0.0.0.0:8080'), { host: '0.0.0.0', port: 8080 })
  t.same(parseHostPort('127.0.0.1:9901'), { host: '127.0.0.1', port: 9901 })
  t.same(parseHostPort(':8080'), { host: '0.0.0.0', port: 8080 }, 'empty host means every interface')
  t.same(parseHostPort('[::1]:9901'), { host: '::1', port: 9901 })
  t.same(parseHostPort('localhost:0'), { host: 'localhost', port: 0 })
  for (const bad of ['8080', 'localhost', 'host:65536', 'host:port', '::1:9901', 'a:123456', '']) {
    t.equal(parseHostPort(bad), undefined, `${JSON.stringify(bad)} is malformed`)
  }
  t.ok(isLoopback('127.0.0.1'))
  t.ok(isLoopback('127.1.2.3'))
  t.ok(isLoopback('localhost'))
  t.ok(isLoopback('::1'))
  t.notOk(isLoopback('0.0.0.0'))
  t.notOk(isLoopback('10.0.0.1'))
  t.notOk(isLoopback('::'))
  t.notOk(isLoopback('127.0.0.1.example.com'))
})

t.test('values: parseOrigin', async (t) => {
  t.same(parseOrigin('http://127.0.0.1:3001'), { origin: 'http://127.0.0.1:3001' })
  t.same(parseOrigin('http://127.0.0.1:3001/'), { origin: 'http://127.0.0.1:3001' }, 'a bare trailing slash is fine')
  t.same(parseOrigin('https://API.Example.com'), { origin: 'https://api.example.com' }, 'host lowercased')
  t.same(parseOrigin('http://h:80'), { origin: 'http://h' }, 'default port dropped')
  t.match(parseOrigin('nope'), { error: /^not a URL: "nope"/ })
  t.match(parseOrigin(42), { error: /must be a URL string/ })
  t.match(parseOrigin('ftp://h:21'), { error: 'must be http:// or https://, got ftp://' })
  t.match(parseOrigin('http://h:1/api'), { error: /without a path/ })
  t.match(parseOrigin('http://h:1/?a=1'), { error: /without a path, query/ })
  t.match(parseOrigin('http://h:1/#x'), { error: /fragment/ })
  t.match(parseOrigin('http://u:p@h:1'), { error: /credentials/ })
})

t.test('values: substituteEnv', async (t) => {
  t.same(substituteEnv('a ${X} b', { X: 'x' }), { text: 'a x b', missing: [] })
  t.same(substituteEnv('${X:-dflt}', {}), { text: 'dflt', missing: [] })
  t.same(substituteEnv('${X:-dflt}', { X: 'set' }), { text: 'set', missing: [] })
  t.same(substituteEnv('${X:-dflt}', { X: '' }), { text: 'dflt', missing: [] }, ':- also covers set-but-empty, as in sh')
  t.same(substituteEnv('${X:-}', {}), { text: '', missing: [] })
  t.same(substituteEnv('${X}', { X: '' }), { text: '', missing: [] }, 'set but empty is not missing')
  t.same(substituteEnv('${A}-${B}-${C:-c}', {}), { text: '--c', missing: ['A', 'B'] }, 'every missing name, not only the first')
  t.same(substituteEnv('$X and ${1X} stay', { X: 'x' }), { text: '$X and ${1X} stay', missing: [] })
})

t.test('defaults are filled from DEFAULTS', async (t) => {
  const c = parse(ONE)
  t.same(c.listen, { host: '0.0.0.0', port: 8080 })
  t.same(c.admin, { listen: { host: '127.0.0.1', port: 9901 }, token: '', allowedHosts: [] })
  t.same(c.trustedProxies, [])
  t.same(c.client, { header: 60_000, idle: 65_000, body: 60_000 })
  t.same(c.services.users.limits, { maxConnections: 1024 })
  t.equal(c.state.file, resolve(process.cwd(), 'data/state.json'), 'no file: relative to the working folder')
  t.equal(c.file, undefined)
  const u = c.services.users
  t.equal(u.name, 'users')
  t.same(u.match, { pathPrefix: '/api/users' })
  t.equal(u.live, 'blue')
  t.same(u.blue.targets, ['http://127.0.0.1:3001'])
  t.same(u.green.targets, ['http://127.0.0.1:3002'])
  t.same(u.timeouts, { connect: 2000, response: 30_000, idleUpstream: 60_000 })
  t.same(u.timeouts, DEFAULTS.defaults.timeouts)
  t.same(u.gate, { minHealthy: 1, minShadowCompared: 200 })
  t.same(u.guard, { window: 60_000, maxErrorRate: 0.05, minRequests: 20 })
  t.same(u.drain, { timeout: 30_000 })
  t.equal(u.health, undefined, 'no health section: probes off')
  t.same(u.smoke, [])
  t.notOk('preview' in u)
  t.notOk('sticky' in u)
  t.same(u.blue, { targets: ['http://127.0.0.1:3001'] })

  const empty = parse('services:\n  root:\n    match: { host: example.com }\n    blue: { targets: [http://h:1] }\n')
  t.same(empty.services.root.match, { host: 'example.com', pathPrefix: '/' }, 'pathPrefix defaults to /')
  t.same(empty.services.root.green, { targets: [] }, 'the idle color may have no targets')
})

t.test('state.file resolves against the config file folder', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'sub', 'switchyard.yaml')
  t.equal(parse(ONE, {}, file).state.file, join(dir, 'sub', 'data', 'state.json'), 'default ./data/state.json')
  t.equal(parse(`state: { file: ../st.json }\n${ONE}`, {}, file).state.file, join(dir, 'st.json'))
  t.equal(parse(`state: { file: /var/lib/sy.json }\n${ONE}`, {}, file).state.file, '/var/lib/sy.json', 'absolute kept')
  t.equal(parse(ONE, {}, file).file, file)

  writeFileSync(join(dir, 'a.yaml'), `state: { file: s/state.json }\n${ONE}`)
  const loaded = loadConfigFile(join(dir, 'a.yaml'), {})
  t.equal(loaded.file, join(dir, 'a.yaml'))
  t.equal(loaded.state.file, join(dir, 's', 'state.json'))

  onlyProblem(t, `state: { file: 7 }\n${ONE}`, 'state.file', /must be a string/)
  onlyProblem(t, `state: { file: a, dir: b }\n${ONE}`, 'state.dir', /unknown key \(expected one of: file, etcd\)/)
})

t.test('listen addresses', async (t) => {
  const c = parse(`listen: 127.0.0.1:18080\nadmin: { listen: 'localhost:19901' }\n${ONE}`)
  t.same(c.listen, { host: '127.0.0.1', port: 18080 })
  t.same(c.admin.listen, { host: 'localhost', port: 19901 })
  t.same(parse(`listen: ':9000'\n${ONE}`).listen, { host: '0.0.0.0', port: 9000 })
  onlyProblem(t, `listen: 8080\n${ONE}`, 'listen', /not a host:port address: 8080/)
  onlyProblem(t, `listen: 'x:99999'\n${ONE}`, 'listen', /not a host:port address: "x:99999"/)
  onlyProblem(t, `admin: { listen: nope }\n${ONE}`, 'admin.listen', /not a host:port address: "nope"/)
})

t.test('defaults are inherited by services and overridden per service', async (t) => {
  const c = parse(`defaults:
  timeouts: { connect: 500ms, response: 10s }
  gate: { minHealthy: 2 }
  guard: { window: 2m, maxErrorRate: 0.1 }
  drain: { timeout: 5s }
services:
${svc('users', '/api/users', `    timeouts: { response: 1.5s }
    guard: { minRequests: 50 }
    drain: { timeout: 1m }
`)}${svc('orders', '/api/orders', '', 3011)}`)
  const u = c.services.users
  const o = c.services.orders
  t.same(o.timeouts, { connect: 500, response: 10_000, idleUpstream: 60_000 }, 'defaults over DEFAULTS')
  t.same(o.gate, { minHealthy: 2, minShadowCompared: 200 })
  t.same(o.guard, { window: 120_000, maxErrorRate: 0.1, minRequests: 20 })
  t.same(o.drain, { timeout: 5000 })
  t.same(u.timeouts, { connect: 500, response: 1500, idleUpstream: 60_000 }, 'service overrides one field, inherits the rest')
  t.same(u.gate, { minHealthy: 2, minShadowCompared: 200 })
  t.same(u.guard, { window: 120_000, maxErrorRate: 0.1, minRequests: 50 })
  t.same(u.drain, { timeout: 60_000 })
  t.same(DEFAULTS.defaults.timeouts, { connect: 2000, response: 30_000, idleUpstream: 60_000 }, 'DEFAULTS untouched')
})

t.test('numbers: gate, guard, thresholds', async (t) => {
  const c = parse(`defaults:\n  gate: { minHealthy: 0 }\n  guard: { maxErrorRate: 0, minRequests: '5' }\n${ONE}`)
  t.same(c.services.users.gate, { minHealthy: 0, minShadowCompared: 200 }, 'minHealthy 0 allowed')
  t.same(c.services.users.guard, { window: 60_000, maxErrorRate: 0, minRequests: 5 }, 'numeric strings accepted (for ${VAR})')
  t.equal(parse(`defaults:\n  guard: { maxErrorRate: 1 }\n${ONE}`).services.users.guard.maxErrorRate, 1)
  onlyProblem(t, `defaults:\n  gate: { minHealthy: -1 }\n${ONE}`, 'defaults.gate.minHealthy', /must be at least 0/)
  onlyProblem(t, `defaults:\n  gate: { minHealthy: 1.5 }\n${ONE}`, 'defaults.gate.minHealthy', /must be an integer/)
  onlyProblem(t, `defaults:\n  gate: { minHealthy: lots }\n${ONE}`, 'defaults.gate.minHealthy', /must be an integer/)
  onlyProblem(t, `defaults:\n  guard: { maxErrorRate: 1.5 }\n${ONE}`, 'defaults.guard.maxErrorRate', /from 0 to 1/)
  onlyProblem(t, `defaults:\n  guard: { maxErrorRate: -0.1 }\n${ONE}`, 'defaults.guard.maxErrorRate', /from 0 to 1/)
  onlyProblem(t, `defaults:\n  guard: { maxErrorRate: half }\n${ONE}`, 'defaults.guard.maxErrorRate', /from 0 to 1/)
  onlyProblem(t, `defaults:\n  guard: { minRequests: 0 }\n${ONE}`, 'defaults.guard.minRequests', /must be at least 1/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    gate: { minHealthy: x }\n')}`, 'services.users.gate.minHealthy', /must be an integer/)
})

t.test('durations', async (t) => {
  const ok = parse(`defaults:\n  timeouts: { connect: 500ms, response: 1.5s, idleUpstream: 1m }\n  drain: { timeout: 1h }\n${ONE}`)
  t.same(ok.services.users.timeouts, { connect: 500, response: 1500, idleUpstream: 60_000 })
  t.same(ok.services.users.drain, { timeout: 3_600_000 })
  onlyProblem(t, `defaults:\n  timeouts: { connect: 2 seconds }\n${ONE}`, 'defaults.timeouts.connect', /^not a duration \(use 500ms, 2s, 1m\): "2 seconds"$/)
  onlyProblem(t, `defaults:\n  timeouts: { connect: 5 }\n${ONE}`, 'defaults.timeouts.connect', /not a duration .*: 5$/)
  onlyProblem(t, `defaults:\n  timeouts: { response: 0s }\n${ONE}`, 'defaults.timeouts.response', /must be greater than zero/)
  onlyProblem(t, `defaults:\n  timeouts: { response: 0.1ms }\n${ONE}`, 'defaults.timeouts.response', /must be greater than zero/)
  onlyProblem(t, `defaults:\n  guard: { window: soon }\n${ONE}`, 'defaults.guard.window', /not a duration/)
  onlyProblem(t, `defaults:\n  drain: { timeout: -1s }\n${ONE}`, 'defaults.drain.timeout', /not a duration/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    timeouts: { idleUpstream: 1d }\n')}`, 'services.users.timeouts.idleUpstream', /not a duration .*"1d"/)
})

t.test('${VAR} and ${VAR:-default} substitution', async (t) => {
  const yaml = `listen: \${HOST:-127.0.0.1}:\${PORT}
admin: { token: '\${TOKEN:-}' }
services:
  users:
    match: { pathPrefix: '\${PREFIX:-/api/users}' }
    blue: { targets: ["http://\${BLUE_HOST}:3001"] }
`
  const set = parse(yaml, { HOST: '10.1.2.3', PORT: '9000', TOKEN: 's3cret', PREFIX: '/u', BLUE_HOST: 'b.internal' })
  t.same(set.listen, { host: '10.1.2.3', port: 9000 })
  t.equal(set.admin.token, 's3cret')
  t.equal(set.services.users.match.pathPrefix, '/u')
  t.same(set.services.users.blue.targets, ['http://b.internal:3001'])

  const dflt = parse(yaml, { PORT: '9001', BLUE_HOST: 'b' })
  t.same(dflt.listen, { host: '127.0.0.1', port: 9001 }, 'unset with default')
  t.equal(dflt.admin.token, '', 'unset with empty default')
  t.equal(dflt.services.users.match.pathPrefix, '/api/users')

  const problems = problemsOf(t, yaml, { BLUE_HOST: 'b' })
  t.equal(problems[0].path, 'listen', 'names the path that uses it')
  t.match(problems[0].message, /^environment variable PORT is not set and has no default \(use \$\{PORT:-default\}\)$/)
  t.same(problems.slice(1), [{ path: 'listen', message: 'not a host:port address: "127.0.0.1:"' }], 'then the value it left, at the same path')

  const both = problemsOf(t, yaml, {}).filter((p) => p.message.startsWith('environment variable'))
  t.same(both.map((p) => [p.path, p.message.split(' ')[2]]), [['listen', 'PORT'], ['services.users.blue.targets[0]', 'BLUE_HOST']], 'every missing variable')

  t.equal(parse(`admin: { token: '\${T}' }\n${ONE}`, { T: '' }).admin.token, '', 'set but empty is not an error')
  t.equal(parse(`# \${NOT_A_VALUE}\n${ONE}`).services.users.name, 'users', 'comments are not substituted')
  t.equal(parse(ONE, { PATH: '/bin' }).listen.port, 8080, 'env without references is harmless')
})

t.test('engine: fast by default, node on request, nothing else', async (t) => {
  t.equal(parse(ONE).engine, 'fast')
  t.equal(parse(`engine: node\n${ONE}`).engine, 'node')
  onlyProblem(t, `engine: turbo\n${ONE}`, 'engine', /^must be fast or node, got "turbo"$/)
})

t.test('unknown keys name their path', async (t) => {
  onlyProblem(t, `bogus: 1\n${ONE}`, 'bogus', /^unknown key \(expected one of: listen, tls, redirect, engine, trustedProxies, client, admin, state, fleet, log, metrics, pinning, tracing, defaults, services\)$/)
  onlyProblem(t, `admin: { listen: 127.0.0.1:9901, tokn: x }\n${ONE}`, 'admin.tokn', /unknown key \(expected one of: listen, token, allowedHosts\)/)
  onlyProblem(t, `defaults:\n  timeouts: { connect: 1s, read: 2s }\n${ONE}`, 'defaults.timeouts.read', /unknown key \(expected one of: connect, response, idleUpstream, body\)/)
  onlyProblem(t, `defaults:\n  retries: 3\n${ONE}`, 'defaults.retries', /unknown key \(expected one of: timeouts, health, passive, gate, guard, verify, drain, limits\)/)
  onlyProblem(t, `defaults:\n  health: { path: /h, every: 2s }\n${ONE}`, 'defaults.health.every', /unknown key/)
  onlyProblem(t, `defaults:\n  gate: { min: 1 }\n${ONE}`, 'defaults.gate.min', /unknown key \(expected one of: minHealthy, maxShadowDiff, minShadowCompared\)/)
  onlyProblem(t, `defaults:\n  guard: { windw: 1s }\n${ONE}`, 'defaults.guard.windw', /unknown key/)
  onlyProblem(t, `defaults:\n  drain: { wait: 1s }\n${ONE}`, 'defaults.drain.wait', /unknown key/)
  onlyProblem(t, `services:\n${svc('users', '/api/users', '    bogus: true\n')}`, 'services.users.bogus', /^unknown key \(expected one of: match, protocol, live, blue, green, preview, sticky, smoke, shadow, timeouts, health, passive, gate, guard, verify, drain, limits\)$/)
  onlyProblem(t, `services:\n${svc('users', '/api/users', '    timeouts: { connect: 1s, idle: 2s }\n')}`, 'services.users.timeouts.idle', /unknown key/)
  onlyProblem(t, `services:\n  users:\n    match: { pathPrefix: /u, method: GET }\n    blue: { targets: [http://h:1] }\n`, 'services.users.match.method', /unknown key \(expected one of: host, pathPrefix\)/)
  onlyProblem(t, `services:\n  users:\n    match: { pathPrefix: /u }\n    blue: { targets: [http://h:1], weight: 2 }\n`, 'services.users.blue.weight', /unknown key \(expected one of: targets\)/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    preview: { header: x-c, query: c }\n')}`, 'services.users.preview.query', /unknown key/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    sticky: { cookie: c, ttl: 1m }\n')}`, 'services.users.sticky.ttl', /unknown key/)
  onlyProblem(t, `services:\n${svc('users', '/', '    smoke:\n      - { path: /ping }\n      - { path: /ping, status: 204 }\n')}`, 'services.users.smoke[1].status', /unknown key \(expected one of: method, path, headers, expectStatus, bodyContains\)/)
  onlyProblem(t, `__proto__: { x: 1 }\n${ONE}`, '__proto__', /unknown key/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    __proto__: { live: green }\n')}`, 'services.users.__proto__', /unknown key/)
})

t.test('sections of the wrong type', async (t) => {
  onlyProblem(t, `admin: 127.0.0.1:9901\n${ONE}`, 'admin', /must be a mapping/)
  onlyProblem(t, `defaults: []\n${ONE}`, 'defaults', /must be a mapping/)
  onlyProblem(t, `defaults:\n  timeouts: 2s\n${ONE}`, 'defaults.timeouts', /must be a mapping/)
  onlyProblem(t, `admin: { token: 12345 }\n${ONE}`, 'admin.token', /must be a string/)
  t.match(problemsOf(t, '- a\n- b\n'), [{ path: '', message: 'must be a mapping' }, { path: 'services', message: /required/ }])
  onlyProblem(t, `services:\n  users: [a]\n`, 'services.users', /must be a mapping/)
  onlyProblem(t, `services:\n  users:\n    match: /u\n    blue: { targets: [http://h:1] }\n`, 'services.users.match', /must be a mapping/)
  onlyProblem(t, `services:\n  users:\n    match: { pathPrefix: /u }\n    blue: [http://h:1]\n`, 'services.users.blue', /must be a mapping/)
})

t.test('targets', async (t) => {
  const c = parse(`services:\n  users:\n    match: { pathPrefix: /u }\n    blue: { targets: ['http://127.0.0.1:3001/', 'https://B.example.com:443', 'http://[::1]:3002'] }\n`)
  t.same(c.services.users.blue.targets, ['http://127.0.0.1:3001', 'https://b.example.com', 'http://[::1]:3002'], 'normalized to origins')

  const base = (targets: string): string => `services:\n  users:\n    match: { pathPrefix: /u }\n    blue: { targets: [http://127.0.0.1:3001] }\n    green: { targets: ${targets} }\n`
  onlyProblem(t, base('[http://127.0.0.1:3002, not-a-url]'), 'services.users.green.targets[1]', /^not a URL: "not-a-url"$/)
  onlyProblem(t, base('[ftp://127.0.0.1:21]'), 'services.users.green.targets[0]', /^must be http:\/\/ or https:\/\/, got ftp:\/\/$/)
  onlyProblem(t, base('[http://127.0.0.1:3002/api]'), 'services.users.green.targets[0]', /must be an origin without a path/)
  onlyProblem(t, base('[http://127.0.0.1:3002, http://127.0.0.1:3003, http://127.0.0.1:3002/]'), 'services.users.green.targets[2]', /^duplicate target http:\/\/127\.0\.0\.1:3002$/)
  onlyProblem(t, base('[http://h:80, http://H]'), 'services.users.green.targets[1]', /duplicate target http:\/\/h$/)
  onlyProblem(t, base('[42]'), 'services.users.green.targets[0]', /must be a URL string/)
  onlyProblem(t, base('http://127.0.0.1:3002'), 'services.users.green.targets', /must be a list of URLs/)

  const many = problemsOf(t, base('[x, ftp://h, http://h/p]'))
  t.same(many.map((p) => p.path), ['services.users.green.targets[0]', 'services.users.green.targets[1]', 'services.users.green.targets[2]'], 'each bad target reported')
})

t.test('live color', async (t) => {
  t.equal(parse(`services:\n  users:\n    match: { pathPrefix: /u }\n    live: green\n    green: { targets: [http://h:2] }\n`).services.users.live, 'green')
  onlyProblem(t, 'services:\n  users:\n    match: { pathPrefix: /u }\n    green: { targets: [http://h:2] }\n', 'services.users.blue.targets', /^the live color \(blue\) needs at least one target$/)
  onlyProblem(t, 'services:\n  users:\n    match: { pathPrefix: /u }\n    live: green\n    blue: { targets: [http://h:1] }\n    green: { targets: [] }\n', 'services.users.green.targets', /the live color \(green\) needs at least one target/)
  onlyProblem(t, 'services:\n  users:\n    match: { pathPrefix: /u }\n    blue: {}\n', 'services.users.blue.targets', /needs at least one target/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    live: red\n')}`, 'services.users.live', /^must be blue or green, got "red"$/)
  onlyProblem(t, 'services:\n  users:\n    match: { pathPrefix: /u }\n    live: red\n', 'services.users.live', /must be blue or green/)
  onlyProblem(t, 'services:\n  users:\n    match: { pathPrefix: /u }\n    blue: { targets: [ftp://h] }\n', 'services.users.blue.targets[0]', /http:\/\/ or https:\/\//)

  const unrelated = problemsOf(t, 'services:\n  users:\n    match: { pathPrefix: u }\n    bogus: 1\n    green: { targets: [http://h:2] }\n')
  t.same(unrelated.map((p) => p.path).sort(), ['services.users.blue.targets', 'services.users.bogus', 'services.users.match.pathPrefix'], 'other problems in the service do not hide missing live targets')
})

t.test('routes: match host and pathPrefix', async (t) => {
  const c = parse(`services:
${svc('api', '/api', '', 3001)}${svc('users', '/api/users/', '', 3003)}  web:
    match: { host: WWW.Example.com }
    blue: { targets: [http://h:5] }
  webapi:
    match: { host: www.example.com, pathPrefix: /api }
    blue: { targets: [http://h:6] }
`)
  t.same(c.services.api.match, { pathPrefix: '/api' }, 'nested prefixes are fine')
  t.same(c.services.users.match, { pathPrefix: '/api/users' }, 'trailing slash normalized')
  t.same(c.services.web.match, { host: 'www.example.com', pathPrefix: '/' }, 'host lowercased')
  t.same(c.services.webapi.match, { host: 'www.example.com', pathPrefix: '/api' }, 'same prefix on another host is a different route')
  t.equal(parse(`services:\n${svc('root', '/')}`).services.root.match.pathPrefix, '/')
  t.equal(parse(`services:\n${svc('root', '//')}`).services.root.match.pathPrefix, '/')
  t.equal(parse(`services:\n${svc('a', '/a//')}`).services.a.match.pathPrefix, '/a')

  onlyProblem(t, `services:\n${svc('users', '/api/users')}${svc('people', '/api/users', '', 3011)}`, 'services.people.match', /^same route as service users \(host any, pathPrefix \/api\/users\)$/)
  onlyProblem(t, `services:\n${svc('a', '/api')}${svc('b', '/api/', '', 3011)}`, 'services.b.match', /same route as service a/)
  onlyProblem(t, 'services:\n  a:\n    match: { host: x.io }\n    blue: { targets: [http://h:1] }\n  b:\n    match: { host: X.IO, pathPrefix: / }\n    blue: { targets: [http://h:2] }\n', 'services.b.match', /same route as service a \(host x\.io, pathPrefix \/\)/)
  onlyProblem(t, 'services:\n  a:\n    blue: { targets: [http://h:1] }\n', 'services.a.match', /^required: host and\/or pathPrefix$/)
  onlyProblem(t, 'services:\n  a:\n    match: {}\n    blue: { targets: [http://h:1] }\n', 'services.a.match', /needs host and\/or pathPrefix/)
  onlyProblem(t, `services:\n${svc('a', 'api')}`, 'services.a.match.pathPrefix', /must start with \//)
  onlyProblem(t, `services:\n${svc('a', '"/api?x=1"')}`, 'services.a.match.pathPrefix', /no \?, # or spaces/)
  onlyProblem(t, `services:\n${svc('a', '"/a b"')}`, 'services.a.match.pathPrefix', /no \?, # or spaces/)
  onlyProblem(t, `services:\n${svc('a', '12')}`, 'services.a.match.pathPrefix', /must be a string/)
  onlyProblem(t, 'services:\n  a:\n    match: { host: "bad host" }\n    blue: { targets: [http://h:1] }\n', 'services.a.match.host', /not a host name: "bad host"/)
  onlyProblem(t, 'services:\n  a:\n    match: { host: x.io:8080 }\n    blue: { targets: [http://h:1] }\n', 'services.a.match.host', /not a host name/)
})

t.test('service names and the services section', async (t) => {
  const ok = parse(`services:\n${svc('a', '/a')}${svc('users-v2_x', '/b', '', 3003)}${svc('9lives', '/c', '', 3005)}${svc('x'.repeat(63), '/d', '', 3007)}`)
  t.same(Object.keys(ok.services), ['a', 'users-v2_x', '9lives', 'x'.repeat(63)])
  for (const bad of ['Users', '-users', '_users', 'us.ers', 'x'.repeat(64)]) {
    onlyProblem(t, `services:\n${svc(bad, '/a')}`, `services.${bad}`, /^service name must be lowercase letters, digits, - or _ \(at most 63\)$/)
  }
  onlyProblem(t, 'listen: 0.0.0.0:8080\n', 'services', /^required: at least one service$/)
  onlyProblem(t, '', 'services', /required: at least one service/)
  onlyProblem(t, 'services: {}\n', 'services', /required: at least one service/)
  onlyProblem(t, 'services:\n', 'services', /must be a mapping/)
  onlyProblem(t, 'services: [users]\n', 'services', /must be a mapping/)
})

t.test('admin token: required off loopback', async (t) => {
  onlyProblem(t, `admin: { listen: 0.0.0.0:9901 }\n${ONE}`, 'admin.token', /^required when admin.listen \(0.0.0.0\) is not loopback$/)
  onlyProblem(t, `admin: { listen: ':9901' }\n${ONE}`, 'admin.token', /\(0.0.0.0\) is not loopback/)
  onlyProblem(t, `admin: { listen: 10.0.0.5:9901, token: '' }\n${ONE}`, 'admin.token', /required when admin.listen \(10.0.0.5\)/)
  onlyProblem(t, `admin: { listen: 0.0.0.0:9901, token: '\${SWITCHYARD_ADMIN_TOKEN:-}' }\n${ONE}`, 'admin.token', /required/)
  const withToken = parse(`admin: { listen: 0.0.0.0:9901, token: '\${SWITCHYARD_ADMIN_TOKEN:-}' }\n${ONE}`, { SWITCHYARD_ADMIN_TOKEN: 'tok' })
  t.same(withToken.admin, { listen: { host: '0.0.0.0', port: 9901 }, token: 'tok', allowedHosts: [] })
  t.equal(parse(`admin: { listen: 0.0.0.0:9901, token: abc }\n${ONE}`).admin.token, 'abc')
  for (const host of ['127.0.0.1:9901', 'localhost:9901', '[::1]:9901', '127.0.0.2:1']) {
    t.equal(parse(`admin: { listen: '${host}' }\n${ONE}`).admin.token, '', `${host} needs no token`)
  }
})

t.test('health', async (t) => {
  t.equal(parse(ONE).services.users.health, undefined, 'absent: off')

  const d = parse(`defaults:\n  health: {}\n${ONE}`)
  t.same(d.services.users.health, DEFAULTS.defaults.health, 'empty defaults.health: on with DEFAULTS')
  t.same(d.services.users.health, { path: '/healthz', interval: 2000, timeout: 1000, healthyThreshold: 2, unhealthyThreshold: 3, expectStatus: [], assumeHealthy: false, panicThreshold: 0 })

  const c = parse(`defaults:
  health: { path: /ready, interval: 5s }
services:
${svc('inherits', '/a')}${svc('tweaks', '/b', '    health: { timeout: 500ms, unhealthyThreshold: 5 }\n', 3003)}${svc('off', '/c', '    health: false\n', 3005)}`)
  t.same(c.services.inherits.health, { path: '/ready', interval: 5000, timeout: 1000, healthyThreshold: 2, unhealthyThreshold: 3, expectStatus: [], assumeHealthy: false, panicThreshold: 0 })
  t.same(c.services.tweaks.health, { path: '/ready', interval: 5000, timeout: 500, healthyThreshold: 2, unhealthyThreshold: 5, expectStatus: [], assumeHealthy: false, panicThreshold: 0 }, 'service overrides part of defaults.health')
  t.equal(c.services.off.health, undefined, 'health: false turns probes off')

  const own = parse(`services:\n${svc('users', '/u', '    health: { path: /live }\n')}`)
  t.same(own.services.users.health, { ...DEFAULTS.defaults.health, path: '/live' }, 'service-only health fills DEFAULTS')
  t.equal(parse(`defaults:\n  health: false\n${ONE}`).services.users.health, undefined, 'defaults.health: false')

  onlyProblem(t, `defaults:\n  health: { path: healthz }\n${ONE}`, 'defaults.health.path', /must start with \//)
  onlyProblem(t, `defaults:\n  health: { healthyThreshold: 0 }\n${ONE}`, 'defaults.health.healthyThreshold', /at least 1/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: { interval: 2 }\n')}`, 'services.users.health.interval', /not a duration/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: true\n')}`, 'services.users.health', /must be a mapping/)

  const opts = parse(`services:\n${svc('users', '/u', '    health: { expectStatus: [200, 204], assumeHealthy: true, panicThreshold: 50 }\n')}`)
  t.same(opts.services.users.health?.expectStatus, [200, 204])
  t.equal(opts.services.users.health?.assumeHealthy, true)
  t.equal(opts.services.users.health?.panicThreshold, 50)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: { expectStatus: 200 }\n')}`, 'services.users.health.expectStatus', /list of HTTP statuses/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: { expectStatus: [200, 700] }\n')}`, 'services.users.health.expectStatus[1]', /HTTP status/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: { expectStatus: [99] }\n')}`, 'services.users.health.expectStatus[0]', /at least 100/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: { assumeHealthy: yes please }\n')}`, 'services.users.health.assumeHealthy', /true or false/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: { panicThreshold: 101 }\n')}`, 'services.users.health.panicThreshold', /percentage/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    health: { interval: 1s, timeout: 2s }\n')}`, 'services.users.health.timeout', /not be longer than health.interval/)
})

t.test('smoke checks must fall under their service route', async (t) => {
  const ok = parse(`services:\n${svc('users', '/api/users', '    smoke:\n      - { path: /api/users }\n      - { path: \'/api/users/ping?x=1\' }\n')}`)
  t.equal(ok.services.users.smoke.length, 2)
  onlyProblem(t, `services:\n${svc('users', '/api/users', '    smoke:\n      - { path: /api/usersx/ping }\n')}`, 'services.users.smoke[0].path', /under the service's pathPrefix \/api\/users/)
  onlyProblem(t, `services:\n${svc('users', '/api/users', '    smoke:\n      - { path: /health }\n')}`, 'services.users.smoke[0].path', /under the service's pathPrefix/)
})

t.test('passive health (outlier ejection)', async (t) => {
  t.same(parse(ONE).services.users.passive, DEFAULTS.defaults.passive, 'on by default')
  t.same(DEFAULTS.defaults.passive, { consecutiveFailures: 5, baseEjectionTime: 30000, maxEjectionTime: 300000 })
  const c = parse(`defaults:
  passive: { consecutiveFailures: 3 }
services:
${svc('inherits', '/a')}${svc('tweaks', '/b', '    passive: { baseEjectionTime: 1s, maxEjectionTime: 10s }\n', 3003)}${svc('off', '/c', '    passive: false\n', 3005)}`)
  t.same(c.services.inherits.passive, { consecutiveFailures: 3, baseEjectionTime: 30000, maxEjectionTime: 300000 })
  t.same(c.services.tweaks.passive, { consecutiveFailures: 3, baseEjectionTime: 1000, maxEjectionTime: 10000 })
  t.equal(c.services.off.passive, undefined)
  t.equal(parse(`defaults:\n  passive: false\n${ONE}`).services.users.passive, undefined)
  onlyProblem(t, `services:\n${svc('users', '/u', '    passive: { consecutiveFailures: 0 }\n')}`, 'services.users.passive.consecutiveFailures', /at least 1/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    passive: { baseEjectionTime: 1m, maxEjectionTime: 10s }\n')}`, 'services.users.passive.maxEjectionTime', /not be shorter/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    passive: { ejections: 2 }\n')}`, 'services.users.passive.ejections', /unknown key/)
})

t.test('preview and sticky', async (t) => {
  const c = parse(`services:\n${svc('users', '/u', '    preview: { header: X-Switchyard-Color, cookie: SY-Preview }\n    sticky: { cookie: sy-color }\n')}`)
  t.same(c.services.users.preview, { header: 'x-switchyard-color', cookie: 'SY-Preview' }, 'header lowercased, cookie kept')
  t.same(c.services.users.sticky, { cookie: 'sy-color' })
  t.same(parse(`services:\n${svc('users', '/u', '    preview: { cookie: p }\n')}`).services.users.preview, { cookie: 'p' })
  onlyProblem(t, `services:\n${svc('users', '/u', '    preview: {}\n')}`, 'services.users.preview', /needs header and\/or cookie/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    preview: { header: "x color" }\n')}`, 'services.users.preview.header', /not a header name/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    preview: { cookie: "a;b" }\n')}`, 'services.users.preview.cookie', /not a cookie name/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    sticky: {}\n')}`, 'services.users.sticky.cookie', /must be a string/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    sticky: { cookie: "a=b" }\n')}`, 'services.users.sticky.cookie', /not a cookie name/)
})

t.test('smoke checks', async (t) => {
  const c = parse(`services:\n${svc('users', '/api', `    smoke:
      - { path: /api/users/ping }
      - { method: post, path: '/api/users?dry=1', headers: { X-Test: yes, accept: text/plain }, expectStatus: 204, bodyContains: ok }
`)}`)
  t.same(c.services.users.smoke, [
    { method: 'GET', path: '/api/users/ping', headers: {}, expectStatus: 200 },
    { method: 'POST', path: '/api/users?dry=1', headers: { 'x-test': 'yes', accept: 'text/plain' }, expectStatus: 204, bodyContains: 'ok' },
  ], 'defaults GET and 200; method uppercased; header names lowercased')

  const smoke = (lines: string): string => `services:\n${svc('users', '/', `    smoke:\n${lines}`)}`
  onlyProblem(t, smoke('      - { method: GET }\n'), 'services.users.smoke[0].path', /^required$/)
  onlyProblem(t, smoke('      - { path: ping }\n'), 'services.users.smoke[0].path', /must start with \//)
  onlyProblem(t, smoke('      - { path: /a }\n      - { path: /b, method: "GE T" }\n'), 'services.users.smoke[1].method', /not an HTTP method/)
  onlyProblem(t, smoke('      - { path: /a, expectStatus: 600 }\n'), 'services.users.smoke[0].expectStatus', /100-599/)
  onlyProblem(t, smoke('      - { path: /a, expectStatus: 99 }\n'), 'services.users.smoke[0].expectStatus', /at least 100/)
  onlyProblem(t, smoke('      - { path: /a, headers: { "bad header": x } }\n'), 'services.users.smoke[0].headers.bad header', /not a header name/)
  onlyProblem(t, smoke('      - { path: /a, headers: { x-n: 1 } }\n'), 'services.users.smoke[0].headers.x-n', /must be a string/)
  onlyProblem(t, smoke('      - { path: /a, bodyContains: [x] }\n'), 'services.users.smoke[0].bodyContains', /must be a string/)
  onlyProblem(t, smoke('      - /ping\n'), 'services.users.smoke[0]', /must be a mapping/)
  onlyProblem(t, `services:\n${svc('users', '/u', '    smoke: { path: /ping }\n')}`, 'services.users.smoke', /must be a list of checks/)
})

t.test('YAML errors', async (t) => {
  const bad = problemsOf(t, 'services: [\n')
  t.equal(bad.length, 1)
  t.equal(bad[0].path, '')
  t.match(bad[0].message, /^YAML: .*line 2/)

  const dup = problemsOf(t, `services:\n${svc('users', '/a')}${svc('users', '/b', '', 3003)}`)
  t.equal(dup.length, 1)
  t.match(dup[0], { path: '', message: /^YAML: Map keys must be unique/ })

  const dupTop = problemsOf(t, `listen: 0.0.0.0:1\nlisten: 0.0.0.0:2\n${ONE}`)
  t.match(dupTop, [{ path: '', message: /unique.*line 2/ }])

  t.throws(() => parseConfig('services: [', { file: '/tmp/x.yaml', env: {} }), { name: 'ConfigError', message: /^invalid config \/tmp\/x\.yaml:\n {2}YAML: / })
})

t.test('every problem is reported at once', async (t) => {
  const yaml = `listen: 0.0.0.0:8080
admin: { listen: 0.0.0.0:9901 }
defaults:
  timeouts: { connect: 2 seconds }
services:
  users:
    match: { pathPrefix: /api/users }
    bogus: 1
    blue: { targets: [http://127.0.0.1:3001] }
    green: { targets: [http://127.0.0.1:3002, nope] }
`
  let err: ConfigError | undefined
  try {
    parseConfig(yaml, { file: '/etc/switchyard.yaml', env: {} })
  } catch (e) {
    err = e as ConfigError
  }
  t.type(err, ConfigError)
  t.same(err?.problems.map((p) => p.path), ['admin.token', 'defaults.timeouts.connect', 'services.users.bogus', 'services.users.green.targets[1]'])
  t.equal(err?.message, [
    'invalid config /etc/switchyard.yaml:',
    '  admin.token: required when admin.listen (0.0.0.0) is not loopback',
    '  defaults.timeouts.connect: not a duration (use 500ms, 2s, 1m): "2 seconds"',
    '  services.users.bogus: unknown key (expected one of: match, protocol, live, blue, green, preview, sticky, smoke, shadow, timeouts, health, passive, gate, guard, verify, drain, limits)',
    '  services.users.green.targets[1]: not a URL: "nope"',
  ].join('\n'))

  const three = problemsOf(t, `services:
  Bad:
    match: { pathPrefix: /x }
    blue: { targets: [http://h:1] }
  users:
    match: { pathPrefix: /u }
    live: red
    blue: { targets: [http://h:2] }
    smoke: [{ method: GET }]
`)
  t.same(three.map((p) => p.path), ['services.Bad', 'services.users.live', 'services.users.smoke[0].path'], '3 mistakes, 3 problems')
})

t.test('validate command', async (t) => {
  t.test('the example config is OK', async (t) => {
    const { out, err, io } = capture()
    const code = await run(['validate', join(ROOT, 'config', 'switchyard.yaml')], io)
    t.equal(code, 0)
    t.same(err, [])
    t.same(out, [`OK: ${join(ROOT, 'config', 'switchyard.yaml')} (2 services: users, orders)`])
  })

  t.test('the example config resolves as documented', async (t) => {
    const c = loadConfigFile(join(ROOT, 'config', 'switchyard.yaml'), {})
    t.equal(c.state.file, join(ROOT, 'data', 'state.json'))
    t.equal(c.admin.token, '')
    t.same(c.services.users.preview, { header: 'x-switchyard-color', cookie: 'switchyard-preview' })
  })

  t.test('a single service says "service"', async (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'one.yaml')
    writeFileSync(file, ONE)
    const { out, io } = capture()
    t.equal(await run(['validate', file], io), 0)
    t.same(out, [`OK: ${file} (1 service: users)`])
  })

  t.test('a relative FILE is reported absolute', async (t) => {
    const { out, io } = capture()
    t.equal(await run(['validate', 'config/switchyard.yaml'], io), 0)
    t.same(out, [`OK: ${resolve('config/switchyard.yaml')} (2 services: users, orders)`])
  })

  t.test('a bad file prints every error with its path, exit 1', async (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'bad.yaml')
    writeFileSync(file, `services:
  users:
    match: { pathPrefix: /api/users }
    bogus: 1
    blue: { targets: [http://127.0.0.1:3001] }
    green: { targets: [http://127.0.0.1:3002, "http://\${GREEN_HOST}:3003"] }
`)
    const { out, err, io } = capture()
    t.equal(await run(['validate', file], io), 1)
    t.same(out, [])
    t.equal(err.length, 1)
    const text = err[0]
    t.match(text, `invalid config ${file}:`)
    t.match(text, '\n  services.users.bogus: unknown key')
    t.match(text, '\n  services.users.green.targets[1]: environment variable GREEN_HOST is not set')
    t.match(text, 'services.users.green.targets[1]: not a URL')

    const withEnv = capture({ GREEN_HOST: '127.0.0.1' })
    t.equal(await run(['validate', file], withEnv.io), 1, 'uses io.env')
    t.notMatch(withEnv.err[0], 'GREEN_HOST')
    t.match(withEnv.err[0], 'services.users.bogus')
  })

  t.test('env from io, not process.env', async (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'env.yaml')
    writeFileSync(file, `admin: { listen: 0.0.0.0:9901, token: '\${SY_TEST_TOKEN}' }\n${ONE}`)
    const bad = capture({})
    t.equal(await run(['validate', file], bad.io), 1)
    t.match(bad.err[0], 'admin.token: environment variable SY_TEST_TOKEN is not set')
    const good = capture({ SY_TEST_TOKEN: 't' })
    t.equal(await run(['validate', file], good.io), 0)
    t.match(good.out[0], /^OK: /)
  })

  t.test('a missing file: exit 1, message names it', async (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'nope.yaml')
    const { out, err, io } = capture()
    t.equal(await run(['validate', file], io), 1)
    t.same(out, [])
    t.match(err[0], `cannot read ${file}`)
    t.match(err[0], 'ENOENT')
  })

  t.test('invalid YAML: exit 1', async (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'y.yaml')
    writeFileSync(file, 'services: {\n')
    const { err, io } = capture()
    t.equal(await run(['validate', file], io), 1)
    t.match(err[0], `invalid config ${file}:\n  YAML: `)
  })

  t.test('wrong usage: exit 2', async (t) => {
    for (const argv of [['validate'], ['validate', 'a.yaml', 'b.yaml'], ['validate', '--nope', 'a.yaml']]) {
      const { out, err, io } = capture()
      t.equal(await run(argv, io), 2, argv.join(' '))
      t.same(out, [])
      t.equal(err.length, 1)
      t.match(err[0], /^switchyard: /)
    }
    const none = capture()
    await run(['validate'], none.io)
    t.same(none.err, ['switchyard: usage: switchyard validate FILE'])
  })
})

t.test('edge trust settings: trustedProxies, admin.allowedHosts, client deadlines, limits', async (t) => {
  const c = parse(`trustedProxies: [10.0.0.0/8, 192.168.1.7, 'FD00::/8']\nclient: { headerTimeout: 5s, idleTimeout: 10s, bodyTimeout: 2s }\nadmin: { allowedHosts: [Admin.Internal, 'admin.internal:9901'] }\ndefaults:\n  limits: { maxConnections: 8 }\n${ONE}`)
  t.same(c.trustedProxies, ['10.0.0.0/8', '192.168.1.7/32', 'fd00::/8'], 'bare addresses become /32 or /128, IPv6 lowercased')
  t.same(c.client, { header: 5000, idle: 10_000, body: 2000 })
  t.same(c.admin.allowedHosts, ['admin.internal', 'admin.internal:9901'])
  t.equal(c.services.users.limits.maxConnections, 8)
  onlyProblem(t, `trustedProxies: 10.0.0.0/8\n${ONE}`, 'trustedProxies', /must be a list of IP addresses or CIDR blocks/)
  onlyProblem(t, `trustedProxies: [10.0.0.0/33]\n${ONE}`, 'trustedProxies[0]', /not an IP address or CIDR block/)
  onlyProblem(t, `trustedProxies: [10.0.0.0/8, example.com]\n${ONE}`, 'trustedProxies[1]', /not an IP address or CIDR block/)
  onlyProblem(t, `client: { bodyTimeout: soon }\n${ONE}`, 'client.bodyTimeout', /not a duration/)
  onlyProblem(t, `client: { readTimeout: 1s }\n${ONE}`, 'client.readTimeout', /unknown key \(expected one of: headerTimeout, idleTimeout, bodyTimeout\)/)
  onlyProblem(t, `admin: { allowedHosts: ['http://x'] }\n${ONE}`, 'admin.allowedHosts[0]', /not a host name/)
  onlyProblem(t, `defaults:\n  limits: { maxConnections: 0 }\n${ONE}`, 'defaults.limits.maxConnections', /at least 1/)
})
