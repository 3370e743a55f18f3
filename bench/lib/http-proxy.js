// Child process: the naive baseline, http-proxy-3 with a keep-alive agent.
//   node http-proxy.js --target http://127.0.0.1:PORT
// Reports { type: 'ready', url }.

import http from 'node:http'
import { createProxyServer } from 'http-proxy-3'
import { parseArgs, serveAsChild } from './children.js'

const args = parseArgs()
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256 })
// xfwd: adds X-Forwarded-For/-Port/-Proto like Switchyard and the nginx config do.
const proxy = createProxyServer({ target: String(args.target), agent, xfwd: true })
proxy.on('error', (err, req, res) => {
  // res is a ServerResponse for web requests (a socket for ws, unused here).
  if (res && typeof res.writeHead === 'function' && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'upstream_error', message: err.message }))
  } else {
    res?.destroy?.()
  }
})

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => proxy.web(req, res))

await serveAsChild(server, () => agent.destroy())
