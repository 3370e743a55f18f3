// An HTTP/2 request as the resolve step reads it: pseudo-headers and fields
// as node:http2 hands them, nothing copied that routing does not ask for.

import type { IncomingHttpHeaders } from 'node:http2'
import { countHeader, listValue, PIN_HEADER } from '../headers.js'
import { clientAddress, type RequestFacts } from '../resolve.js'
import type { Forwarding } from '../trust.js'

/**
 * An HTTP/2 request as the resolve step reads it. HTTP/2 has no Connection
 * header (nghttp2 refuses a request carrying one), so no names are listed.
 */
export class H2RequestFacts implements RequestFacts {
  readonly method: string
  readonly target: string
  /** :authority, else Host (RFC 9113 8.3.1). */
  readonly host: string | undefined
  readonly smoke: string | undefined
  /** node:http2 joins Cookie lines with '; ' (RFC 9113 8.2.3). */
  readonly cookie: string | undefined
  readonly connectionNames: undefined = undefined
  readonly peer: string
  readonly headers: IncomingHttpHeaders
  /** The fields as received, [name, value, ...], pseudo-headers first. */
  readonly raw: string[]
  readonly forwarding: Forwarding

  constructor (headers: IncomingHttpHeaders, raw: string[], peer: string, forwarding: Forwarding) {
    this.headers = headers
    this.raw = raw
    this.peer = peer
    this.forwarding = forwarding
    this.method = headers[':method'] as string
    this.target = headers[':path'] ?? ''
    this.host = headers[':authority'] ?? headers.host
    const smoke = headers[PIN_HEADER]
    this.smoke = typeof smoke === 'string' ? smoke : undefined
    this.cookie = headers.cookie
  }

  /** node:http2 joins a repeated field's lines: the line count tells them apart from one line. */
  header (lowerName: string): string | undefined {
    const v = this.headers[lowerName]
    return typeof v === 'string' && countHeader(this.raw, lowerName) === 1 ? v : undefined
  }

  get baggage (): string | undefined {
    return listValue(this.headers.baggage)
  }

  headerLines (lowerName: string): number {
    return countHeader(this.raw, lowerName)
  }

  clientAddress (): string {
    const xff = this.headers['x-forwarded-for']
    return clientAddress(this.peer, this.forwarding.trusts(this.peer), typeof xff === 'string' ? xff : undefined)
  }
}
