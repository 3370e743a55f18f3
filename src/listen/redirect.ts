// The optional plain-HTTP listener beside a TLS one (`redirect.listen`): every
// request is sent to the same host, path and query over https with a 308.

import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { ClientTimeouts } from '../config/schema.js'
import { writeError } from '../errors.js'

/**
 * A Host the redirect repeats: a DNS name or IPv4 address, or an IPv6
 * literal in brackets, then an optional port. Anything else (spaces, `@`,
 * `/`, control characters) is refused rather than put in a Location.
 */
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?)(?::\d{1,5})?$/

/** A request target's bytes outside printable ASCII, percent-encoded (node:http hands the target over as latin1). */
function escapeTarget (target: string): string {
  return target.replace(/[^\x21-\x7e]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)
}

/**
 * Where a request is sent: `https://HOST[:PORT]/path?query`, HOST the name
 * the client asked for without its port, PORT the TLS listener's own (left
 * out when it is 443). Undefined when the request names no usable host.
 */
export function redirectTarget (req: Pick<IncomingMessage, 'url' | 'headers'>, httpsPort: number): string | undefined {
  let host = req.headers.host
  let path = req.url ?? '/'
  if (!path.startsWith('/')) {
    if (path === '*') {
      path = '/'
    } else {
      // The absolute form (`GET http://a.example/x`): its authority is the host asked for (RFC 9112 3.2.2).
      let url: URL
      try {
        url = new URL(path)
      } catch {
        return undefined
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined
      host = url.host
      path = url.pathname + url.search
    }
  }
  if (host === undefined || !HOST.test(host)) return undefined
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0]
  return `https://${name}${httpsPort === 443 ? '' : `:${httpsPort}`}${escapeTarget(path)}`
}

/**
 * The redirect listener for a TLS listener bound to `httpsPort` (its actual
 * port: with `listen: ...:0` the one the kernel gave). 308 keeps the method
 * and body, so a POST to http arrives at https as a POST.
 */
export function createRedirectServer (httpsPort: number, client: ClientTimeouts): http.Server {
  return http.createServer({
    keepAliveTimeout: client.idle,
    headersTimeout: client.header,
    requestTimeout: 0,
  }, (req: IncomingMessage, res: ServerResponse) => {
    const location = redirectTarget(req, httpsPort)
    // A request body is not worth reading: the connection closes after the answer instead.
    const close = (req.headers['content-length'] ?? '0') !== '0' || req.headers['transfer-encoding'] !== undefined
    if (location === undefined) {
      writeError(res, 'bad_request', 'a redirect to https needs a valid Host header', true)
      return
    }
    if (close) res.shouldKeepAlive = false
    res.writeHead(308, { location, 'content-length': 0 })
    res.end()
  })
}
