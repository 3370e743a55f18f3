// Child process: NOT a proxy. One Node http.createServer that answers every
// request itself, as the upstream does: 200 "ok" (text/plain, 2 bytes) on any
// path after reading any request body, and --large-bytes N bytes
// (application/octet-stream, default 65536) on --large-path (default /64k);
// content-length always set. It is the ceiling for anything one Node process
// can serve on this box: no proxy written in Node gets past it.
//   node node-hello.js [--large-path /64k] [--large-bytes 65536]
// Reports { type: 'ready', url }.

import http from 'node:http'
import { parseArgs, serveAsChild } from './children.js'

const args = parseArgs()
const largePath = typeof args['large-path'] === 'string' ? args['large-path'] : '/64k'
const largeBody = Buffer.alloc(Number(args['large-bytes'] ?? 65536), 'x')
const body = Buffer.from('ok')
const headers = { 'content-type': 'text/plain', 'content-length': body.length }
const largeHeaders = { 'content-type': 'application/octet-stream', 'content-length': largeBody.length }

function answer (req, res) {
  if (req.url === largePath) {
    res.writeHead(200, largeHeaders)
    res.end(largeBody)
  } else {
    res.writeHead(200, headers)
    res.end(body)
  }
}

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  // Read (and drop) a request body before answering, like the upstream.
  if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
    req.resume()
    req.once('end', () => answer(req, res))
    return
  }
  answer(req, res)
})

await serveAsChild(server)
