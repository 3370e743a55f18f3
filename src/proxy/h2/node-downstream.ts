// An HTTP/1.1 client (node:http's request and response) as the HTTP/2
// forwarder sees it: a REST client of a service whose targets speak h2c or
// h2, or a gRPC-over-HTTP/1.1 tool. Trailers reach it only when its response
// is chunked (node:http drops them otherwise, as HTTP/1.0 has none).

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { OutgoingHttpHeaders } from 'node:http2'
import type { Readable } from 'node:stream'
import { ERRORS, writeError, type ErrorCode } from '../../errors.js'
import type { Downstream } from '../downstream.js'
import { requestIdFor, type ClientDeadlines } from '../forward.js'
import { encodeGrpcMessage, grpcStatusOf, isGrpc } from '../grpc.js'
import { FORBIDDEN_TRAILERS, stripRequestHeaders } from '../headers.js'
import type { Forwarding, SentForwarding } from '../trust.js'

export class NodeDownstream implements Downstream {
  readonly method: string
  readonly path: string
  readonly authority: string | undefined
  readonly requestId: string
  readonly grpc: boolean
  readonly body: Readable | null
  private readonly req: IncomingMessage
  private readonly res: ServerResponse
  private readonly forwarding: Forwarding
  /** The request id the gateway made (the client sent none): it goes upstream too. */
  private readonly madeId: boolean
  private headers: OutgoingHttpHeaders | undefined
  private over = false

  /** Client deadlines (client.bodyTimeout, client.idleTimeout), ms; 0: none. */
  private readonly deadlines: ClientDeadlines
  private bodyTimer: NodeJS.Timeout | undefined
  private stallTimer: NodeJS.Timeout | undefined

  /** `req.url` is the resolve step's normalized target already (edge.ts). */
  constructor (req: IncomingMessage, res: ServerResponse, forwarding: Forwarding, deadlines: ClientDeadlines = { body: 0, stall: 0 }) {
    this.req = req
    this.res = res
    this.forwarding = forwarding
    this.deadlines = deadlines
    this.method = req.method as string
    this.path = req.url as string
    this.authority = req.headers.host
    const given = req.headers['x-request-id']
    this.madeId = typeof given !== 'string' || given === ''
    this.requestId = requestIdFor(req, undefined)
    this.grpc = isGrpc(req.headers['content-type'])
    const len = req.headers['content-length']
    this.body = (len !== undefined && len !== '0') || req.headers['transfer-encoding'] !== undefined ? req : null
    res.once('close', () => {
      this.over = true
      clearTimeout(this.bodyTimer)
      clearTimeout(this.stallTimer)
    })
    // client.bodyTimeout: a body that goes quiet while the gateway reads it (not while the upstream holds it back).
    if (this.body !== null && deadlines.body > 0 && !req.complete) {
      this.bodyTimer = setTimeout(this.onBodySilent, deadlines.body)
      req.on('data', () => this.bodyTimer?.refresh())
      req.on('resume', () => this.bodyTimer?.refresh())
      req.once('end', () => clearTimeout(this.bodyTimer))
    }
  }

  private readonly onBodySilent = (): void => {
    if (this.over || this.req.complete) return
    if (this.req.isPaused()) {
      this.bodyTimer?.refresh()
      return
    }
    if (this.res.headersSent) this.destroy()
    else this.fail('request_timeout', `no request body bytes for ${this.deadlines.body}ms`)
  }

  upstreamHeaders (): OutgoingHttpHeaders {
    if (this.headers !== undefined) return this.headers
    const req = this.req
    const sent: SentForwarding = { xff: '', xfProto: undefined, xfHost: undefined, forwarded: undefined }
    const flat = this.forwarding.appendHeaders(stripRequestHeaders(req.rawHeaders, false, sent), req.socket.remoteAddress ?? '', req.headers.host, sent)
    const out: OutgoingHttpHeaders = {}
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i].toLowerCase()
      const prev = out[name]
      if (prev === undefined) out[name] = flat[i + 1]
      // One Cookie field on HTTP/2 may be split, but its lines joined by `; ` are the same cookies (RFC 9113 8.2.3).
      else if (name === 'cookie') out[name] = `${prev as string}; ${flat[i + 1]}`
      else out[name] = Array.isArray(prev) ? [...prev, flat[i + 1]] : [String(prev), flat[i + 1]]
    }
    if (this.madeId) out['x-request-id'] = this.requestId
    // TE is hop-by-hop, but `trailers` says the client takes them, and gRPC servers ask for it.
    const te = req.headers.te
    if (this.grpc || (typeof te === 'string' && /(^|,)\s*trailers\s*(;|,|$)/i.test(te))) out.te = 'trailers'
    this.headers = out
    return out
  }

  get headersSent (): boolean {
    return this.res.headersSent
  }

  get status (): number {
    return this.res.headersSent ? this.res.statusCode : 0
  }

  get closed (): boolean {
    return this.over || this.res.writableEnded
  }

  // The gateway may have answered already (client.bodyTimeout, above): what the upstream sends after that goes nowhere.
  respond (status: number, headers: OutgoingHttpHeaders): void {
    if (!this.res.writableEnded) this.res.writeHead(status, headers)
  }

  write (chunk: Buffer): boolean {
    return this.res.writableEnded || this.res.write(chunk)
  }

  onDrain (fn: () => void): void {
    // client.idleTimeout: a client that takes none of its answer for that long would hold the upstream stream forever.
    if (this.deadlines.stall > 0 && this.stallTimer === undefined) {
      this.stallTimer = setTimeout(() => { if (!this.over) this.destroy() }, this.deadlines.stall)
    }
    this.res.once('drain', () => {
      clearTimeout(this.stallTimer)
      this.stallTimer = undefined
      fn()
    })
  }

  end (trailers: OutgoingHttpHeaders | undefined): void {
    if (this.res.writableEnded) return
    if (trailers !== undefined && this.res.chunkedEncoding) {
      const relayed: Array<[string, string]> = []
      for (const name in trailers) {
        if (FORBIDDEN_TRAILERS.has(name)) continue
        const v = trailers[name]
        if (Array.isArray(v)) for (const line of v) relayed.push([name, line])
        else if (v !== undefined) relayed.push([name, String(v)])
      }
      try {
        this.res.addTrailers(relayed)
      } catch {}
    }
    this.res.end()
  }

  fail (code: ErrorCode, message?: string): number {
    const res = this.res
    if (res.headersSent) {
      res.destroy()
      return 0
    }
    if (!this.grpc) return writeError(res, code, message, this.body !== null && !this.req.complete)
    // A trailers-only gRPC answer: HTTP 200 with the status in the head (grpc PROTOCOL-HTTP2).
    if (this.body !== null && !this.req.complete) res.shouldKeepAlive = false
    res.writeHead(200, {
      'content-type': 'application/grpc',
      'grpc-status': String(grpcStatusOf(code)),
      'grpc-message': encodeGrpcMessage(message ?? ERRORS[code].message),
      'content-length': 0,
    })
    res.end()
    return 0
  }

  destroy (): void {
    this.res.destroy()
  }

  onClose (fn: () => void): void {
    if (this.over) fn()
    else this.res.once('close', fn)
  }
}
