// The public listener's certificates: picked by SNI, and replaced all together
// when the files change or a reload asks, or not at all when one is bad.

import { realpathSync, watch as watchFolder, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import type { SecureContext, SecureContextOptions } from 'node:tls'
import { CertError, normalizeName, readCert, type CertInfo, type LoadedCert } from '../config/certs.js'
import type { TlsConfig, TlsVersion } from '../config/schema.js'
import { log as gatewayLog, type Level } from '../log.js'

export { CertError, readCert, type CertInfo, type LoadedCert }

export type SNICallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void

/** What a TLS (or HTTP/2 secure) server needs from the store: its default certificate, the floor version, and SNI. */
export interface ServerTlsOptions {
  cert: Buffer
  key: Buffer
  minVersion: TlsVersion
  SNICallback: SNICallback
  /** Session ticket keys when the store was given some (worker processes share the primary's); else the server makes its own. */
  ticketKeys?: Buffer
}

/** A server whose default certificate the store keeps current (tls.Server, http2.Http2SecureServer). */
export interface SecureServer {
  setSecureContext: (options: SecureContextOptions) => void
  getTicketKeys: () => Buffer
}

export type LogFn = (level: Level, msg: string, fields?: Record<string, unknown>) => void

/** File events closer together than this are one change: an editor or a deploy writes cert and key in quick succession. */
const SETTLE_MS = 100

/** A whole set of certificates with the indexes SNI looks names up in; replaced as one. */
interface CertSet {
  minVersion: TlsVersion
  certs: LoadedCert[]
  exact: Map<string, LoadedCert>
  /** `*.example.com` under `example.com`: the name less its first label. */
  wildcard: Map<string, LoadedCert>
}

/** Reads every certificate of `tls`; throws the first CertError, having changed nothing. */
function readSet (tls: TlsConfig): CertSet {
  if (tls.certs.length === 0) throw new CertError('tls.certs', '', 'required: at least one certificate')
  const certs = tls.certs.map((files, i) => readCert(files, `tls.certs[${i}]`, tls.minVersion))
  const exact = new Map<string, LoadedCert>()
  const wildcard = new Map<string, LoadedCert>()
  for (const cert of certs) {
    for (const name of cert.names) {
      // Two certificates with one name: the first listed keeps it, as the first is also the default.
      const [index, key] = name.startsWith('*.') ? [wildcard, name.slice(2)] : [exact, name]
      if (!index.has(key)) index.set(key, cert)
    }
  }
  return { minVersion: tls.minVersion, certs, exact, wildcard }
}

function sameSet (a: CertSet, b: CertSet): boolean {
  return a.minVersion === b.minVersion && a.certs.length === b.certs.length && a.certs.every((x, i) => {
    const y = b.certs[i]
    return x.cert === y.cert && x.key === y.key && x.certPem.equals(y.certPem) && x.keyPem.equals(y.keyPem)
  })
}

function infoOf (cert: LoadedCert): CertInfo {
  const { context: _context, certPem: _certPem, keyPem: _keyPem, ...info } = cert
  return { ...info, names: [...info.names] }
}

/**
 * The certificates the public listener serves. Built from the config's
 * `tls` (throws a CertError naming the path when one cannot be served);
 * afterwards every change is all or nothing: a new set is read and checked
 * whole before it replaces the old one, so a half-written or broken file
 * leaves the old certificates serving. Connections already open keep the
 * certificate they shook hands with; the new set is for new handshakes.
 */
export class CertStore {
  #tls: TlsConfig
  #set: CertSet
  readonly #log: LogFn
  readonly #servers = new Map<SecureServer, SecureContextOptions>()
  #watchers: FSWatcher[] = []
  /** The folders (and names) the watchers were set up for, to see when they must move. */
  #watched = ''
  #watching = false
  #onChange: ((certs: CertInfo[]) => void) | undefined
  #timer: NodeJS.Timeout | undefined
  readonly #ticketKeys: Buffer | undefined

  /** `ticketKeys`: 48 bytes every server of this store encrypts session tickets with (processes sharing them resume each other's sessions). */
  constructor (tls: TlsConfig, opts: { log?: LogFn, ticketKeys?: Buffer } = {}) {
    this.#log = opts.log ?? gatewayLog
    this.#ticketKeys = opts.ticketKeys
    this.#set = readSet(tls)
    this.#tls = tls
    this.#warnValidity()
  }

  /** The context for a name a client sent by SNI: an exact name, else a wildcard one label deep, else the default (first) certificate. */
  contextFor (servername: string): SecureContext {
    return this.#pick(servername).context
  }

  /** For `tls.createServer({ SNICallback })`; never fails: an unknown name gets the default certificate. */
  readonly SNICallback: SNICallback = (servername, cb) => {
    cb(null, this.contextFor(servername))
  }

  /** The first certificate's context: for clients that send no SNI or an unknown name. */
  defaultContext (): SecureContext {
    return this.#set.certs[0].context
  }

  /**
   * The options a TLS server is created with. The server's own certificate
   * is what a client without SNI gets, and `minVersion` must be here: a
   * context handed over by SNI comes after the version is settled.
   */
  serverOptions (): ServerTlsOptions {
    const first = this.#set.certs[0]
    return { cert: first.certPem, key: first.keyPem, minVersion: this.#set.minVersion, SNICallback: this.SNICallback, ...(this.#ticketKeys === undefined ? {} : { ticketKeys: this.#ticketKeys }) }
  }

  /**
   * Keeps `server`'s default certificate and minVersion in step with every
   * change (SNICallback follows by itself). `extra` is the rest of what its
   * secure context is built with (ciphers...), as setSecureContext replaces
   * all of it. Returns the function that stops it.
   */
  attach (server: SecureServer, extra: SecureContextOptions = {}): () => void {
    this.#servers.set(server, extra)
    this.#applyTo(server, extra)
    return () => { this.#servers.delete(server) }
  }

  /** What is served now, in config order; the first is the default. */
  certs (): CertInfo[] {
    return this.#set.certs.map(infoOf)
  }

  /**
   * Re-reads every file (of `next` when given: a reloaded config's `tls`)
   * and, only if all can be served, replaces the whole set at once. Throws
   * the CertError of the first one that cannot, having changed nothing.
   * Returns false when the files hold what is already served.
   */
  reload (next: TlsConfig = this.#tls): boolean {
    const set = readSet(next)
    this.#tls = next
    // A new list, or a link that now points elsewhere (a Kubernetes secret update), moves what is watched.
    if (this.#watching && JSON.stringify(this.#folders()) !== this.#watched) this.#startWatchers()
    if (sameSet(set, this.#set)) return false
    this.#set = set
    for (const [server, extra] of this.#servers) this.#applyTo(server, extra)
    this.#warnValidity()
    return true
  }

  /**
   * Reloads when a certificate or key file changes on disk, once the
   * changes settle (SETTLE_MS), and logs what it did: the new certificates,
   * or the refusal naming the file while the old ones go on. Folders are
   * watched, not files, so a file replaced by a rename (editors, `mv`,
   * Kubernetes secret volumes that swap a `..data` link) is still seen.
   * `onChange` hears of each replacement. Returns the function that stops
   * watching (attached servers still follow reload()).
   */
  watch (onChange?: (certs: CertInfo[]) => void): () => void {
    this.#onChange = onChange
    this.#watching = true
    this.#startWatchers()
    return () => this.#unwatch()
  }

  /** Stops watching and forgets attached servers. */
  close (): void {
    this.#unwatch()
    this.#servers.clear()
  }

  #unwatch (): void {
    this.#watching = false
    this.#stopWatchers()
    clearTimeout(this.#timer)
  }

  #pick (servername: string): LoadedCert {
    const set = this.#set
    const name = normalizeName(servername)
    const exact = set.exact.get(name)
    if (exact !== undefined) return exact
    const dot = name.indexOf('.')
    // One label only: `*.example.com` covers `a.example.com`, neither `example.com` nor `a.b.example.com`.
    const wild = dot > 0 ? set.wildcard.get(name.slice(dot + 1)) : undefined
    return wild ?? set.certs[0]
  }

  #applyTo (server: SecureServer, extra: SecureContextOptions): void {
    const first = this.#set.certs[0]
    // Without ticketKeys, setSecureContext makes new ones and every session ticket handed out
    // so far stops resuming: the server's own keys go on, so a reload costs no client a full handshake.
    server.setSecureContext({ ticketKeys: server.getTicketKeys(), ...extra, cert: first.certPem, key: first.keyPem, minVersion: this.#set.minVersion })
  }

  /**
   * Each folder holding a file, with the file names in it worth a reload.
   * A file that is a link is watched where it points too (certbot's `live/`
   * links into `archive/`): the target may be rewritten in place.
   */
  #folders (): Array<[string, string[]]> {
    const folders = new Map<string, Set<string>>()
    const add = (file: string): void => {
      const names = folders.get(dirname(file)) ?? new Set<string>()
      names.add(basename(file))
      folders.set(dirname(file), names)
    }
    for (const files of this.#tls.certs) {
      for (const file of [files.cert, files.key]) {
        add(file)
        try {
          add(realpathSync(file))
        } catch {
          // Gone for now: its own folder's watch sees it come back.
        }
      }
    }
    return [...folders].map(([folder, names]) => [folder, [...names].sort()])
  }

  #startWatchers (): void {
    this.#stopWatchers()
    const folders = this.#folders()
    this.#watched = JSON.stringify(folders)
    for (const [folder, names] of folders) {
      let watcher: FSWatcher
      try {
        // Not persistent: a forgotten watch must not keep a stopping process alive.
        watcher = watchFolder(folder, { persistent: false }, (_event, filename) => {
          // No name: the platform did not say which file; `..x`: Kubernetes swaps its `..data` link to update a secret.
          if (filename === null || names.includes(filename) || filename.startsWith('..')) this.#schedule()
        })
      } catch (err) {
        this.#log('warn', 'cannot watch a certificate folder; changes there need a reload', { folder, error: (err as Error).message })
        continue
      }
      watcher.on('error', (err) => this.#log('warn', 'watching a certificate folder failed; changes there need a reload', { folder, error: err.message }))
      this.#watchers.push(watcher)
    }
  }

  #stopWatchers (): void {
    for (const w of this.#watchers) w.close()
    this.#watchers = []
  }

  #schedule (): void {
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => this.#reloadFromDisk(), SETTLE_MS)
    this.#timer.unref()
  }

  #reloadFromDisk (): void {
    if (!this.#watching) return
    try {
      this.reloadLogged()
    } catch (err) {
      // From a timer nothing above could catch it: whatever went wrong, the old set serves on.
      if (err instanceof CertError) this.#log('error', 'tls certificate refused; the previous certificates are still served', { path: err.path, file: err.file, error: err.reason })
      else this.#log('error', 'tls certificate reload failed; the previous certificates are still served', { error: (err as Error).message })
    }
  }

  /**
   * reload(), then, when something changed, says in the log what is served
   * now (and tells the watch's `onChange`). A refusal is thrown, for the
   * caller to report: a reload request answers with it.
   */
  reloadLogged (next?: TlsConfig): boolean {
    if (!this.reload(next)) return false
    const certs = this.certs()
    this.#log('info', 'tls certificates reloaded', { certs: certs.map((c) => ({ path: c.path, cert: c.cert, names: c.names, validTo: c.validTo.toISOString() })) })
    this.#onChange?.(certs)
    return true
  }

  /** An expired certificate is served all the same (refusing it would turn a warning into an outage), and said so. */
  #warnValidity (): void {
    const now = Date.now()
    for (const c of this.#set.certs) {
      if (c.validTo.getTime() < now) this.#log('warn', 'tls certificate has expired', { path: c.path, cert: c.cert, validTo: c.validTo.toISOString() })
      else if (c.validFrom.getTime() > now) this.#log('warn', 'tls certificate is not valid yet', { path: c.path, cert: c.cert, validFrom: c.validFrom.toISOString() })
    }
  }
}
