// The public listener's certificate store and the `tls`/`redirect` config: SNI choice, real
// handshakes, files replaced on disk (taken, or refused when broken), every error naming its path.

import t from 'tap'
import tls, { type TLSSocket } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CertError, CertStore } from '../src/listen/certs.js'
import { ConfigError, parseConfig, type ConfigProblem } from '../src/config/load.js'
import type { TlsConfig } from '../src/config/schema.js'
import { run } from '../src/commands.js'
import { eventually, tempDir } from './helpers/index.js'
import { fingerprintOf, handshake, logCollector, makeCert, replaceFile, servedFingerprint, type Logged } from './helpers/certs.js'

type Tap = typeof t

/** A TLS echo server on 127.0.0.1:0 built from the store's options, with ALPN as the listener will offer it. */
async function echoServer (t: Tap, store: CertStore): Promise<{ server: tls.Server, port: number }> {
  const sockets = new Set<TLSSocket>()
  const server = tls.createServer({ ...store.serverOptions(), ALPNProtocols: ['h2', 'http/1.1'] }, (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.pipe(socket)
  })
  // A failed handshake (the minVersion test) is the client's to report.
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { server, port: (server.address() as AddressInfo).port }
}

/** Sends `text` and reads it back: bytes both ways on an open connection. */
async function echo (socket: TLSSocket, text: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    let got = ''
    const onData = (chunk: Buffer): void => {
      got += chunk.toString()
      if (got.length >= text.length) {
        socket.off('data', onData)
        resolve(got)
      }
    }
    socket.on('data', onData)
    socket.once('error', reject)
    socket.write(text)
  })
}


t.test('SNI picks a certificate by its subjectAltName, a wildcard one label deep, else the first', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const api = makeCert(dir, 'api', { names: ['api.test', '*.w.test', 'IP:127.0.0.1'] })
  const exactUnderWildcard = makeCert(dir, 'x', { names: ['x.w.test'] })
  const cnOnly = makeCert(dir, 'cn', { cn: 'cn-only.test' })
  const sanHidesCn = makeCert(dir, 'hidden', { cn: 'hidden-cn.test', names: ['shown.test'] })
  const store = new CertStore({ certs: [site, api, exactUnderWildcard, cnOnly, sanHidesCn], minVersion: 'TLSv1.2' }, { log: logCollector().log })

  t.strictSame(store.certs().map((c) => c.names), [['site.test'], ['api.test', '*.w.test'], ['x.w.test'], ['cn-only.test'], ['shown.test']],
    'SAN DNS names (no IP), the CN only without a SAN')
  t.strictSame(store.certs().map((c) => c.path), ['tls.certs[0]', 'tls.certs[1]', 'tls.certs[2]', 'tls.certs[3]', 'tls.certs[4]'])

  const def = store.defaultContext()
  t.equal(store.contextFor('site.test'), def)
  const apiCtx = store.contextFor('api.test')
  t.not(apiCtx, def)
  t.equal(store.contextFor('API.Test.'), apiCtx, 'case and a trailing dot do not matter')
  t.equal(store.contextFor('a.w.test'), apiCtx, 'the wildcard covers one label')
  t.equal(store.contextFor('a.b.w.test'), def, 'not two labels')
  t.equal(store.contextFor('w.test'), def, 'not the bare parent')
  const xCtx = store.contextFor('x.w.test')
  t.not(xCtx, apiCtx, 'an exact name beats a wildcard listed before it')
  t.not(xCtx, def)
  const cnCtx = store.contextFor('cn-only.test')
  t.not(cnCtx, def, 'a certificate without a SAN is picked by its CN')
  t.equal(store.contextFor('hidden-cn.test'), def, 'the CN of a certificate with a SAN is not one of its names')
  t.not(store.contextFor('shown.test'), def)
  t.equal(store.contextFor('unknown.test'), def, 'an unknown name gets the default')
  t.equal(store.contextFor('127.0.0.1'), def, 'an IP SAN is no SNI name')

  const picked = await new Promise((resolve) => store.SNICallback('a.w.test', (err, ctx) => resolve([err, ctx])))
  t.strictSame(picked, [null, apiCtx], 'SNICallback hands over the same choice')
})

t.test('a TLS server with the store serves each name its certificate, by SNI and ALPN together', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const api = makeCert(dir, 'api', { names: ['api.test', '*.w.test'] })
  const store = new CertStore({ certs: [site, api], minVersion: 'TLSv1.2' }, { log: logCollector().log })
  const { port } = await echoServer(t, store)
  const [siteFp, apiFp] = store.certs().map((c) => c.fingerprint256)
  t.equal(siteFp, fingerprintOf(site))
  t.not(siteFp, apiFp)

  t.equal(await servedFingerprint(t, port, 'api.test'), apiFp)
  t.equal(await servedFingerprint(t, port, 'a.w.test'), apiFp)
  t.equal(await servedFingerprint(t, port, 'site.test'), siteFp)
  t.equal(await servedFingerprint(t, port, 'a.b.w.test'), siteFp)
  t.equal(await servedFingerprint(t, port, 'unknown.test'), siteFp)
  t.equal(await servedFingerprint(t, port, undefined), siteFp, 'a client without SNI gets the first certificate')

  const h2 = await handshake(t, port, 'api.test', { ALPNProtocols: ['h2'] })
  t.equal(h2.alpnProtocol, 'h2', 'ALPN still works on a context picked by SNI')
  t.equal(h2.getPeerCertificate().fingerprint256, apiFp)
})

t.test('minVersion holds for every certificate, those picked by SNI too', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const api = makeCert(dir, 'api', { names: ['api.test'] })
  const store = new CertStore({ certs: [site, api], minVersion: 'TLSv1.3' }, { log: logCollector().log })
  const { port } = await echoServer(t, store)
  for (const name of ['api.test', 'site.test', undefined]) {
    await t.rejects(handshake(t, port, name, { maxVersion: 'TLSv1.2' }), `a TLSv1.2 client is refused (SNI ${name})`)
    const ok = await handshake(t, port, name)
    t.equal(ok.getProtocol(), 'TLSv1.3')
  }
})

t.test('a certificate replaced on disk serves new connections while an open one goes on', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const { lines, log } = logCollector()
  const store = new CertStore({ certs: [site], minVersion: 'TLSv1.2' }, { log })
  const { server, port } = await echoServer(t, store)
  store.attach(server)
  const changes: string[][] = []
  t.teardown(store.watch((certs) => changes.push(certs.map((c) => c.fingerprint256))))
  const oldFp = fingerprintOf(site)

  const open = await handshake(t, port, 'site.test')
  t.equal(open.getPeerCertificate().fingerprint256, oldFp)
  t.equal(await echo(open, 'before'), 'before')

  const next = makeCert(dir, 'next', { names: ['site.test'] })
  const newFp = fingerprintOf(next)
  replaceFile(site.key, readFileSync(next.key))
  replaceFile(site.cert, readFileSync(next.cert))

  await eventually(async () => await servedFingerprint(t, port, 'site.test') === newFp)
  t.equal(await servedFingerprint(t, port, undefined), newFp, 'a client without SNI gets the new default too (attach)')
  t.strictSame(changes, [[newFp]], 'onChange heard of one change')
  t.ok(lines.some((l) => l.level === 'info' && l.msg === 'tls certificates reloaded'), 'the reload is logged')
  t.equal(store.certs()[0].fingerprint256, newFp)

  t.equal(open.getPeerCertificate().fingerprint256, oldFp, 'the open connection keeps its certificate')
  t.equal(await echo(open, 'after the swap'), 'after the swap', 'and carries bytes both ways')
  t.notOk(open.destroyed)
})

t.test('a broken replacement is refused and logged, the old certificate still served', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const other = makeCert(dir, 'other', { names: ['other.test'] })
  const { lines, log } = logCollector()
  const store = new CertStore({ certs: [site], minVersion: 'TLSv1.2' }, { log })
  const { server, port } = await echoServer(t, store)
  store.attach(server)
  let changes = 0
  t.teardown(store.watch(() => { changes++ }))
  const oldFp = fingerprintOf(site)
  // Found by path, not by count: a slow machine may split one replacement's events into two reloads.
  const refusal = (path: string): Logged | false => lines.find((l) => l.level === 'error' && l.msg === 'tls certificate refused; the previous certificates are still served' && l.fields.path === path) ?? false

  replaceFile(site.cert, 'this is not a certificate\n')
  const garbage = await eventually(() => refusal('tls.certs[0].cert'))
  t.equal(garbage.fields.file, site.cert)
  t.match(garbage.fields.error, 'is not a PEM certificate')
  t.equal(await servedFingerprint(t, port, 'site.test'), oldFp, 'the old certificate is served')
  t.equal(await servedFingerprint(t, port, undefined), oldFp)

  // A whole certificate that is not the key's: as when a deploy writes the certificate and not (yet) the key.
  replaceFile(site.cert, readFileSync(other.cert))
  const mismatch = await eventually(() => refusal('tls.certs[0].key'))
  t.equal(mismatch.fields.file, site.key)
  t.match(mismatch.fields.error, `is not the key of the certificate in ${site.cert}`)
  t.equal(await servedFingerprint(t, port, 'site.test'), oldFp, 'still the old certificate')
  t.equal(changes, 0)
  t.equal(store.certs()[0].fingerprint256, oldFp)

  // The watch survives refusals: the key arriving completes the pair.
  replaceFile(site.key, readFileSync(other.key))
  const otherFp = fingerprintOf(other)
  await eventually(async () => await servedFingerprint(t, port, 'site.test') === otherFp)
  t.equal(changes, 1)
})

t.test('a Kubernetes secret update (a swapped ..data link) and a link into another folder are followed', async (t) => {
  const dir = tempDir(t)
  const made = [1, 2, 3].map((n) => makeCert(dir, `gen${n}`, { names: ['site.test'] }))
  const fps = made.map(fingerprintOf)

  // What the kubelet does: files in a dated folder, `..data` linking to it, each file a link through `..data`.
  const secret = join(dir, 'secret')
  const project = (n: number): void => {
    const dated = join(secret, `..2026_${n}`)
    mkdirSync(dated, { recursive: true })
    copyFileSync(made[n - 1].cert, join(dated, 'tls.crt'))
    copyFileSync(made[n - 1].key, join(dated, 'tls.key'))
    symlinkSync(`..2026_${n}`, join(secret, '..data_tmp'))
    renameSync(join(secret, '..data_tmp'), join(secret, '..data'))
    // The kubelet removes the old folder; here the second update leaves it a while, so the `..data` swap alone must be seen.
    if (n > 2) rmSync(join(secret, `..2026_${n - 1}`), { recursive: true })
    if (n > 2) rmSync(join(secret, `..2026_${n - 2}`), { recursive: true })
  }
  project(1)
  symlinkSync('..data/tls.crt', join(secret, 'tls.crt'))
  symlinkSync('..data/tls.key', join(secret, 'tls.key'))

  // certbot's layout: `live/` links into `archive/`, whose files may be rewritten in place.
  mkdirSync(join(dir, 'live'))
  mkdirSync(join(dir, 'archive'))
  copyFileSync(made[0].cert, join(dir, 'archive', 'cert.pem'))
  copyFileSync(made[0].key, join(dir, 'archive', 'key.pem'))
  symlinkSync('../archive/cert.pem', join(dir, 'live', 'cert.pem'))
  symlinkSync('../archive/key.pem', join(dir, 'live', 'key.pem'))

  const { lines, log } = logCollector()
  const store = new CertStore({ certs: [{ cert: join(secret, 'tls.crt'), key: join(secret, 'tls.key') }, { cert: join(dir, 'live', 'cert.pem'), key: join(dir, 'live', 'key.pem') }], minVersion: 'TLSv1.2' }, { log })
  t.teardown(store.watch())
  const served = (): string[] => store.certs().map((c) => c.fingerprint256)
  t.strictSame(served(), [fps[0], fps[0]])

  project(2)
  await eventually(() => served()[0] === fps[1])
  project(3)
  await eventually(() => served()[0] === fps[2], { timeout: 3000 })
  t.pass('a second update is seen too: the watch moved with the link')

  writeFileSync(join(dir, 'archive', 'key.pem'), readFileSync(made[1].key))
  writeFileSync(join(dir, 'archive', 'cert.pem'), readFileSync(made[1].cert))
  await eventually(() => served()[1] === fps[1])
  // The links move to another folder (by rename, as certbot does), whose files are then rewritten in place.
  mkdirSync(join(dir, 'archive2'))
  copyFileSync(made[0].cert, join(dir, 'archive2', 'cert.pem'))
  copyFileSync(made[0].key, join(dir, 'archive2', 'key.pem'))
  for (const f of ['cert.pem', 'key.pem']) {
    symlinkSync(`../archive2/${f}`, join(dir, 'live', `${f}.new`))
    renameSync(join(dir, 'live', `${f}.new`), join(dir, 'live', f))
  }
  await eventually(() => served()[1] === fps[0])
  writeFileSync(join(dir, 'archive2', 'key.pem'), readFileSync(made[2].key))
  writeFileSync(join(dir, 'archive2', 'cert.pem'), readFileSync(made[2].cert))
  await eventually(() => served()[1] === fps[2])
  t.strictSame(lines.filter((l) => l.level !== 'info'), [], 'nothing refused, no watch failed')
})

t.test('a stopped watch ignores the files; reload() still reaches attached servers', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const next = makeCert(dir, 'next', { names: ['site.test'] })
  const store = new CertStore({ certs: [site], minVersion: 'TLSv1.2' }, { log: logCollector().log })
  const { server, port } = await echoServer(t, store)
  store.attach(server)
  const [oldFp, newFp] = [fingerprintOf(site), fingerprintOf(next)]
  const stop = store.watch()
  stop()
  replaceFile(site.key, readFileSync(next.key))
  replaceFile(site.cert, readFileSync(next.cert))
  // Nothing to poll for when nothing should happen: wait out several settle periods.
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.equal(await servedFingerprint(t, port, undefined), oldFp, 'not reloaded after the watch stopped')
  t.equal(store.reload(), true)
  t.equal(await servedFingerprint(t, port, undefined), newFp)
  t.equal(await servedFingerprint(t, port, 'site.test'), newFp)
})

function thrown (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}

t.test('session tickets handed out before a reload still resume after it, on TLS 1.3 and 1.2', async (t) => {
  const dir = tempDir(t)
  const site = makeCert(dir, 'site', { names: ['site.test'] })
  const api = makeCert(dir, 'api', { names: ['api.test'] })
  const store = new CertStore({ certs: [site, api], minVersion: 'TLSv1.2' }, { log: logCollector().log })
  const { server, port } = await echoServer(t, store)
  store.attach(server)
  /** A connection that resumes `session` when given one; the session it was given back. */
  const connect = async (name: string, maxVersion: 'TLSv1.2' | 'TLSv1.3', session?: Buffer): Promise<{ reused: boolean, session: Buffer }> => {
    const socket = await handshake(t, port, name, { maxVersion, ...(session === undefined ? {} : { session }) })
    // TLS 1.3 sends its ticket after the handshake: one echo round trip has brought it.
    t.equal(await echo(socket, 'x'), 'x')
    const got = socket.getSession() as Buffer
    const reused = socket.isSessionReused()
    socket.destroy()
    return { reused, session: got }
  }
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    for (const name of ['site.test', 'api.test']) {
      const first = await connect(name, version)
      t.notOk(first.reused)
      t.ok((await connect(name, version, first.session)).reused, `${version} ${name}: resumed before the reload`)
      // A whole new set: the server's context is rebuilt (setSecureContext), which alone would make new ticket keys.
      const next = { site: makeCert(dir, `site-${version}-${name}`, { names: ['site.test'] }), api: makeCert(dir, `api-${version}-${name}`, { names: ['api.test'] }) }
      t.equal(store.reload({ certs: [next.site, next.api], minVersion: 'TLSv1.2' }), true)
      t.ok((await connect(name, version, first.session)).reused, `${version} ${name}: a ticket from before the reload still resumes`)
      t.equal(await servedFingerprint(t, port, name), fingerprintOf(name === 'site.test' ? next.site : next.api), 'a full handshake gets the new certificate')
    }
  }
})

t.test('reload() replaces every certificate at once or none', async (t) => {
  const dir = tempDir(t)
  const a = makeCert(dir, 'a', { names: ['a.test'] })
  const b = makeCert(dir, 'b', { names: ['b.test'] })
  const store = new CertStore({ certs: [a, b], minVersion: 'TLSv1.2' }, { log: logCollector().log })
  const before = store.certs().map((c) => c.fingerprint256)
  const aCtx = store.contextFor('a.test')
  t.equal(store.reload(), false, 'unchanged files change nothing')
  t.equal(store.contextFor('a.test'), aCtx)

  const a2 = makeCert(dir, 'a2', { names: ['a.test'] })
  replaceFile(a.cert, readFileSync(a2.cert))
  replaceFile(a.key, readFileSync(a2.key))
  replaceFile(b.key, 'garbage\n')
  const refused = thrown(() => store.reload())
  t.type(refused, CertError)
  t.match(refused, { path: 'tls.certs[1].key', file: b.key, reason: /is not a PEM private key/ })
  t.strictSame(store.certs().map((c) => c.fingerprint256), before, 'the good new first certificate waits for the second')
  t.equal(store.contextFor('a.test'), aCtx)

  const b2 = makeCert(dir, 'b2', { names: ['b.test'] })
  replaceFile(b.cert, readFileSync(b2.cert))
  replaceFile(b.key, readFileSync(b2.key))
  t.equal(store.reload(), true)
  t.strictSame(store.certs().map((c) => c.fingerprint256), [fingerprintOf(a2), fingerprintOf(b2)])
  t.not(store.contextFor('a.test'), aCtx)

  // A reloaded config's list: adopted whole, so the first certificate (the default) can change.
  const c = makeCert(dir, 'c', { names: ['c.test'] })
  t.equal(store.reload({ certs: [c, a], minVersion: 'TLSv1.3' }), true)
  t.strictSame(store.certs().map((x) => x.path + ' ' + x.names.join()), ['tls.certs[0] c.test', 'tls.certs[1] a.test'])
  t.equal(store.serverOptions().minVersion, 'TLSv1.3')
  t.equal(store.contextFor('b.test'), store.defaultContext(), 'b is gone')
  t.throws(() => store.reload({ certs: [], minVersion: 'TLSv1.2' }), CertError)
  t.equal(store.certs().length, 2)
})

t.test('an expired certificate is served, with a warning', async (t) => {
  const dir = tempDir(t)
  const old = makeCert(dir, 'old', { names: ['old.test'], expired: true })
  const { lines, log } = logCollector()
  const store = new CertStore({ certs: [old], minVersion: 'TLSv1.2' }, { log })
  const info = store.certs()[0]
  t.equal(info.validTo.toISOString(), '2020-01-02T00:00:00.000Z', 'validTo is kept for metrics')
  t.ok(lines.some((l) => l.level === 'warn' && l.msg === 'tls certificate has expired' && l.fields.path === 'tls.certs[0]'))
  const { port } = await echoServer(t, store)
  t.equal(await servedFingerprint(t, port, 'old.test'), info.fingerprint256)
})

/** The problems a config yields. */
function problemsOf (t: Tap, yaml: string, file: string): ConfigProblem[] {
  try {
    parseConfig(yaml, { file, env: {} })
  } catch (err) {
    t.type(err, ConfigError)
    return (err as ConfigError).problems
  }
  t.fail('expected a ConfigError')
  return []
}

const SERVICES = 'services:\n  users:\n    match: { pathPrefix: / }\n    blue: { targets: [http://127.0.0.1:3001] }\n'

t.test('config: tls and redirect, files relative to the config file, every error with its path', async (t) => {
  const dir = tempDir(t)
  mkdirSync(join(dir, 'certs'))
  const site = makeCert(join(dir, 'certs'), 'site', { names: ['site.test'] })
  const other = makeCert(join(dir, 'certs'), 'other', { names: ['other.test'] })
  const file = join(dir, 'sy.yaml')

  const c = parseConfig(`listen: 127.0.0.1:8443\ntls:\n  certs:\n    - { cert: certs/site.pem, key: certs/site-key.pem }\nredirect: { listen: 127.0.0.1:8080 }\n${SERVICES}`, { file, env: {} })
  t.strictSame(c.tls, { certs: [site], minVersion: 'TLSv1.2' } satisfies TlsConfig, 'paths resolve against the config folder; minVersion defaults to TLSv1.2')
  t.strictSame(c.redirect, { listen: { host: '127.0.0.1', port: 8080 } })
  t.equal(parseConfig(SERVICES, { file, env: {} }).tls, undefined, 'no tls: plain HTTP')
  t.equal(parseConfig(`tls: { certs: [{ cert: certs/site.pem, key: certs/site-key.pem }], minVersion: TLSv1.3 }\n${SERVICES}`, { file, env: {} }).tls?.minVersion, 'TLSv1.3')

  writeFileSync(join(dir, 'certs', 'garbage.pem'), 'not pem\n')
  const problems = problemsOf(t, `tls:
  certs:
    - { cert: certs/missing.pem, key: certs/site-key.pem }
    - { cert: certs/garbage.pem, key: certs/site-key.pem }
    - { cert: certs/site.pem, key: certs/other-key.pem }
    - { cert: certs/site.pem, key: certs/garbage.pem }
    - { cert: certs/site.pem }
    - { cert: certs/site.pem, key: certs/site-key.pem, ca: x }
    - { cert: certs/site.pem, key: certs }
  minVersion: TLSv1.1
${SERVICES}`, file)
  t.strictSame(problems.map((p) => p.path), [
    'tls.minVersion',
    'tls.certs[0].cert', 'tls.certs[1].cert', 'tls.certs[2].key', 'tls.certs[3].key', 'tls.certs[4].key', 'tls.certs[5].ca', 'tls.certs[6].key',
  ])
  const at = (path: string): string => problems.find((p) => p.path === path)?.message ?? ''
  t.equal(at('tls.minVersion'), 'must be TLSv1.2 or TLSv1.3, got "TLSv1.1"')
  t.equal(at('tls.certs[0].cert'), `cannot read ${join(dir, 'certs', 'missing.pem')}: no such file`)
  t.match(at('tls.certs[1].cert'), `${join(dir, 'certs', 'garbage.pem')} is not a PEM certificate`)
  t.equal(at('tls.certs[2].key'), `${other.key} is not the key of the certificate in ${site.cert}`)
  t.match(at('tls.certs[3].key'), 'is not a PEM private key')
  t.equal(at('tls.certs[4].key'), 'required: a PEM private key file')
  t.match(at('tls.certs[5].ca'), 'unknown key (expected one of: cert, key)')
  t.equal(at('tls.certs[6].key'), `cannot read ${join(dir, 'certs')}: is a folder, not a file`)

  const only = (yaml: string): ConfigProblem[] => problemsOf(t, yaml + SERVICES, file)
  t.strictSame(only('tls: {}\n'), [{ path: 'tls.certs', message: 'required: at least one { cert, key } of PEM files' }])
  t.strictSame(only('tls: { certs: [] }\n'), [{ path: 'tls.certs', message: 'required: at least one { cert, key } of PEM files' }])
  t.strictSame(only('tls: { certs: certs/site.pem }\n'), [{ path: 'tls.certs', message: 'must be a list of { cert, key } of PEM files' }])
  t.strictSame(only('redirect: { listen: 127.0.0.1:8081 }\n').map((p) => p.path), ['redirect'], 'redirect needs tls')
  const tlsYaml = 'tls: { certs: [{ cert: certs/site.pem, key: certs/site-key.pem }] }\n'
  t.strictSame(only(`${tlsYaml}redirect: {}\n`).map((p) => p.path), ['redirect.listen'])
  t.strictSame(only(`${tlsYaml}redirect: { listen: nowhere }\n`).map((p) => p.path), ['redirect.listen'])
  t.strictSame(only(`listen: 0.0.0.0:8443\n${tlsYaml}redirect: { listen: 127.0.0.1:8443 }\n`), [{ path: 'redirect.listen', message: 'same port as listen (0.0.0.0:8443)' }])
  t.strictSame(only(`${tlsYaml}redirect: { listen: 127.0.0.1:9901 }\n`), [{ path: 'redirect.listen', message: 'same port as admin.listen (127.0.0.1:9901)' }])
  t.equal(parseConfig(`listen: 127.0.0.1:0\n${tlsYaml}redirect: { listen: 127.0.0.1:0 }\n${SERVICES}`, { file, env: {} }).redirect?.listen.port, 0, 'port 0 twice is no clash')
  t.strictSame(only(`${tlsYaml}redirect: { listen: 127.0.0.1:8081, port: 80 }\n`).map((p) => p.path), ['redirect.port'])

  t.test('switchyard validate reports a bad certificate by its path', async (t) => {
    const bad = join(dir, 'bad.yaml')
    writeFileSync(bad, `tls: { certs: [{ cert: certs/site.pem, key: certs/other-key.pem }] }\n${SERVICES}`)
    const out: string[] = []
    const err: string[] = []
    t.equal(await run(['validate', bad], { out: (s) => out.push(s), err: (s) => err.push(s), env: {} }), 1)
    t.strictSame(out, [])
    t.match(err[0], `\n  tls.certs[0].key: ${other.key} is not the key of the certificate in ${site.cert}`)
  })
})
