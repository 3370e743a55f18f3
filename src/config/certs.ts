// A certificate of the public listener read from its PEM files and checked as a
// handshake would need it: the config's load and the listener's store share it.

import { readFileSync } from 'node:fs'
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'
import type { CertFiles, TlsVersion } from './schema.js'

/** A certificate or key that cannot be served; `path` is its place in the config (`tls.certs[1].key`). */
export class CertError extends Error {
  readonly path: string
  readonly file: string
  /** The message without the path, as a config problem carries it. */
  readonly reason: string
  constructor (path: string, file: string, reason: string) {
    super(`${path}: ${reason}`)
    this.name = 'CertError'
    this.path = path
    this.file = file
    this.reason = reason
  }
}

/** What is known of one served certificate, for logs, the admin API and metrics. */
export interface CertInfo {
  /** Its place in the config: `tls.certs[0]`. */
  path: string
  cert: string
  key: string
  /** The DNS names it is picked for, lower case; a wildcard as `*.example.com`. */
  names: string[]
  subject: string
  validFrom: Date
  validTo: Date
  fingerprint256: string
}

/** One certificate read from disk and checked, ready to serve. */
export interface LoadedCert extends CertInfo {
  context: SecureContext
  certPem: Buffer
  keyPem: Buffer
}

/** A DNS name as a certificate may hold it: labels of letters, digits, `-` and `_`, the first one possibly `*`. */
const DNS_NAME = /^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/

function describeFsError (err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return 'no such file'
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied'
  if (code === 'EISDIR') return 'is a folder, not a file'
  return (err as Error).message
}

function readPem (file: string, path: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new CertError(path, file, `cannot read ${file}: ${describeFsError(err)}`)
  }
}

/** The PEM blocks of one kind (`CERTIFICATE`), each whole with its BEGIN and END lines. */
function pemBlocks (text: string, label: string): string[] {
  return text.match(new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----`, 'g')) ?? []
}

/**
 * The names a certificate answers for: its subjectAltName DNS entries, or,
 * only when it has no subjectAltName at all, its subject CN (browsers ignore
 * the CN once a SAN is present, so the gateway does too). IP entries are
 * left out: a client never sends an address as SNI.
 */
function namesOf (x509: X509Certificate): string[] {
  const found: string[] = []
  if (x509.subjectAltName !== undefined) {
    // Node writes `DNS:a.example, DNS:*.example, IP Address:127.0.0.1`, quoting (JSON) a value with odd characters.
    for (const m of x509.subjectAltName.matchAll(/(?:^|, )DNS:("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
      found.push(m[1].startsWith('"') ? String(JSON.parse(m[1])) : m[1])
    }
  } else {
    for (const line of x509.subject.split('\n')) if (line.startsWith('CN=')) found.push(line.slice(3))
  }
  const names: string[] = []
  for (const raw of found) {
    const name = normalizeName(raw)
    // A wildcard must leave at least two labels (`*.com` is refused by browsers); other `*` forms never match.
    if (!DNS_NAME.test(name) || (name.startsWith('*.') && !name.slice(2).includes('.'))) continue
    if (!names.includes(name)) names.push(name)
  }
  return names
}

/** Lower case, without a trailing root dot: how names are compared. */
export function normalizeName (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/**
 * Reads one certificate and its key and checks them the way a handshake
 * would need them: the certificate file PEM (a chain, leaf first), the key
 * PEM and unencrypted, the key the certificate's own, and OpenSSL willing to
 * build a context of the two. `path` is the entry's place in the config
 * (`tls.certs[0]`); a CertError names `path.cert` or `path.key`.
 */
export function readCert (files: CertFiles, path: string, minVersion: TlsVersion): LoadedCert {
  const certPath = `${path}.cert`
  const keyPath = `${path}.key`
  const certPem = readPem(files.cert, certPath)
  const blocks = pemBlocks(certPem.toString('latin1'), 'CERTIFICATE')
  if (blocks.length === 0) throw new CertError(certPath, files.cert, `${files.cert} is not a PEM certificate (no "-----BEGIN CERTIFICATE-----" block)`)
  // A file caught mid-write (or cut short) ends inside a block: OpenSSL's "bad end line" would not say which.
  const begun = certPem.toString('latin1').split('-----BEGIN CERTIFICATE-----').length - 1
  if (begun > blocks.length) throw new CertError(certPath, files.cert, `${files.cert}: certificate ${blocks.length + 1} is cut off (no "-----END CERTIFICATE-----" line); is the file still being written?`)
  const chain = blocks.map((block, i) => {
    try {
      return new X509Certificate(block)
    } catch (err) {
      throw new CertError(certPath, files.cert, `${files.cert}: certificate ${i + 1} cannot be parsed (${(err as Error).message})`)
    }
  })
  const leaf = chain[0]

  const keyPem = readPem(files.key, keyPath)
  const keyText = keyPem.toString('latin1')
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(keyText)) {
    throw new CertError(keyPath, files.key, `${files.key} is encrypted; the gateway takes a key without a passphrase`)
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyText)) {
    throw new CertError(keyPath, files.key, `${files.key} is not a PEM private key (no "-----BEGIN ... PRIVATE KEY-----" block)`)
  }
  let key: KeyObject
  try {
    key = createPrivateKey(keyPem)
  } catch (err) {
    throw new CertError(keyPath, files.key, `${files.key}: the private key cannot be parsed (${(err as Error).message})`)
  }
  if (!leaf.checkPrivateKey(key)) {
    // The chain in the wrong order (the issuer first): the handshake would offer the issuer's certificate.
    const at = chain.findIndex((c) => c.checkPrivateKey(key))
    if (at > 0) throw new CertError(certPath, files.cert, `${files.cert}: certificate ${at + 1} of ${chain.length} is the key's: it must come first (the leaf, then its chain)`)
    throw new CertError(keyPath, files.key, `${files.key} is not the key of the certificate in ${files.cert}`)
  }
  let context: SecureContext
  try {
    context = createSecureContext({ cert: certPem, key: keyPem, minVersion })
  } catch (err) {
    // What OpenSSL alone refuses, such as a key below its security level.
    throw new CertError(certPath, files.cert, `${files.cert} with ${files.key}: ${(err as Error).message}`)
  }
  return {
    path,
    cert: files.cert,
    key: files.key,
    names: namesOf(leaf),
    subject: leaf.subject.replace(/\n/g, ', '),
    validFrom: new Date(leaf.validFrom),
    validTo: new Date(leaf.validTo),
    fingerprint256: leaf.fingerprint256,
    context,
    certPem,
    keyPem,
  }
}
