// Child process: NOT a proxy. Node servers that answer every request
// themselves, 200 with a --body-bytes (100) body of "x", text/plain, as the
// TLS bench's upstream does: what TLS and HTTP/2 cost one Node process with
// no proxy work at all (tls.js's "TLS itself" reference).
//   node node-tls-hello.js --cert FILE --key FILE [--cipher TLS_AES_256_GCM_SHA384]
//       [--curve X25519] [--body-bytes 100]
// Three listeners on 127.0.0.1, port 0 each (only one is loaded at a time):
//   h1:    https.createServer (HTTP/1.1 over TLS)
//   h2:    http2.createSecureServer, the 'stream' API (HTTP/2 over TLS, no HTTP/1.1)
//   plain: http.createServer (HTTP/1.1, no TLS), so TLS's own cost is the difference
// TLS 1.3 only, one cipher suite and one group: the same as nginx-tls.js.
// Reports { type: 'ready', urls: { h1, h2, plain } } (https:// and http://).

import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import { readFileSync } from 'node:fs'
import { exitWithParent, parseArgs, reportStartupError } from './children.js'

const args = parseArgs()
const body = Buffer.alloc(Number(args['body-bytes'] ?? 100), 'x')
const h1Headers = { 'content-type': 'text/plain', 'content-length': body.length }
const h2Headers = { ':status': 200, 'content-type': 'text/plain', 'content-length': body.length }

function answer (req, res) {
  // Read (and drop) a request body before answering, like the upstream.
  if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
    req.resume()
    req.once('end', () => { res.writeHead(200, h1Headers); res.end(body) })
    return
  }
  res.writeHead(200, h1Headers)
  res.end(body)
}

const servers = []
const go = exitWithParent(async () => {
  for (const s of servers) s.closeAllConnections?.()
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(() => resolve()))))
})
process.on('message', (msg) => { if (msg?.type === 'stop') void go(0) })

async function listen (server) {
  servers.push(server)
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  return server.address().port
}

try {
  if (typeof args.cert !== 'string' || typeof args.key !== 'string') throw new Error('--cert FILE and --key FILE are required')
  const tlsOpts = {
    cert: readFileSync(args.cert),
    key: readFileSync(args.key),
    minVersion: 'TLSv1.3',
    ciphers: String(args.cipher ?? 'TLS_AES_256_GCM_SHA384'),
    ecdhCurve: String(args.curve ?? 'X25519'),
  }
  const h1 = https.createServer({ ...tlsOpts, keepAliveTimeout: 65_000 }, answer)
  const h2 = http2.createSecureServer({ ...tlsOpts, allowHTTP1: false })
  h2.on('stream', (stream) => {
    // The request has no body in this bench; answering at once is what a hello does.
    stream.respond(h2Headers)
    stream.end(body)
  })
  // A stream the client resets after its answer was queued errors on the stream: nothing to do.
  h2.on('sessionError', () => {})
  const plain = http.createServer({ keepAliveTimeout: 65_000 }, answer)
  const ports = { h1: await listen(h1), h2: await listen(h2), plain: await listen(plain) }
  process.send({
    type: 'ready',
    urls: { h1: `https://127.0.0.1:${ports.h1}`, h2: `https://127.0.0.1:${ports.h2}`, plain: `http://127.0.0.1:${ports.plain}` },
    pid: process.pid,
  })
} catch (err) {
  reportStartupError(err)
}
