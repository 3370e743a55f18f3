// TLS test material: certificates and keys made by openssl at test time (never
// committed), files replaced as deploy tools do, and handshakes that report what was served.

import tls, { type ConnectionOptions, type TLSSocket } from 'node:tls'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { LogFn } from '../../src/listen/certs.js'
import type { CertFiles } from '../../src/config/schema.js'

interface Teardown { teardown: (fn: () => unknown) => void }

function openssl (args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
}

let serial = 0

/**
 * A self-signed P-256 certificate and key made now by openssl. `names` go in
 * the subjectAltName (DNS unless written `IP:...`); without them the
 * certificate has none and only its CN. `expired`: valid for one day in 2020.
 */
export function makeCert (dir: string, name: string, opts: { names?: string[], cn?: string, expired?: boolean } = {}): CertFiles {
  const files = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) }
  const subj = `/CN=${opts.cn ?? opts.names?.[0] ?? name}`
  const san = opts.names === undefined ? [] : ['-addext', `subjectAltName=${opts.names.map((n) => n.startsWith('IP:') ? n : `DNS:${n}`).join(',')}`]
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', files.key]
  if (opts.expired !== true) {
    openssl(['req', '-x509', ...newKey, '-out', files.cert, '-days', '1', '-subj', subj, ...san], dir)
    return files
  }
  // `req -x509` cannot date a certificate in the past; `ca -selfsign` can.
  const ca = join(dir, `ca-${++serial}`)
  mkdirSync(join(ca, 'new'), { recursive: true })
  writeFileSync(join(ca, 'index.txt'), '')
  writeFileSync(join(ca, 'serial'), '01\n')
  writeFileSync(join(ca, 'ca.cnf'), `[ca]\ndefault_ca = d\n[d]\ndir = ${ca}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/new\nserial = $dir/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n`)
  openssl(['req', '-new', ...newKey, '-out', join(ca, 'req.csr'), '-subj', subj, ...san], dir)
  openssl(['ca', '-batch', '-config', join(ca, 'ca.cnf'), '-selfsign', '-keyfile', files.key, '-in', join(ca, 'req.csr'), '-out', files.cert, '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext'], dir)
  return files
}

/** Replaces `file` the way deploy tools and editors do: the new bytes under a temp name, then a rename over it. */
export function replaceFile (file: string, content: string | Buffer): void {
  writeFileSync(`${file}.tmp`, content)
  renameSync(`${file}.tmp`, file)
}

export interface Logged { level: string, msg: string, fields: Record<string, unknown> }

export function logCollector (): { lines: Logged[], log: LogFn } {
  const lines: Logged[] = []
  return { lines, log: (level, msg, fields = {}) => { lines.push({ level, msg, fields }) } }
}

/** A finished handshake; `servername` undefined sends no SNI (an IP host never does). */
export async function handshake (t: Teardown, port: number, servername: string | undefined, opts: ConnectionOptions = {}): Promise<TLSSocket> {
  const socket = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername === undefined ? {} : { servername }), ...opts }, () => resolve(s))
    s.once('error', reject)
  })
  t.teardown(() => { socket.destroy() })
  return socket
}

export async function servedFingerprint (t: Teardown, port: number, servername: string | undefined): Promise<string> {
  const socket = await handshake(t, port, servername)
  const fp = socket.getPeerCertificate().fingerprint256
  socket.destroy()
  return fp
}

/** What the files hold when called: take it before they are replaced. */
export function fingerprintOf (files: CertFiles): string {
  return new X509Certificate(readFileSync(files.cert)).fingerprint256
}
