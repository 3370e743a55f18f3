// Child process: tiny upstream HTTP server(s) on 127.0.0.1, port 0.
//   node backend.js --names ok            -> one server answering 200 "ok"
//   node backend.js --names blue,green --color-body
//                                          -> one server per name, each answering 200 with its name
// Options: --delay-ms N   answer after N ms (keeps requests in flight across flips)
//          --idle-close N  close a keep-alive connection after N ms idle WITHOUT
//                          announcing it (no Keep-Alive: timeout header), as many
//                          non-Node servers do; exercises stale pooled connections
// Reports { type: 'ready', servers: { name: port } }; answers { type: 'stats' }
// with the number of requests each server has answered, and { type: 'reset' }.

import http from 'node:http'
import { exitWithParent, parseArgs, reportStartupError } from './children.js'

const args = parseArgs()
const names = String(args.names ?? 'ok').split(',').filter(Boolean)
const colorBody = args['color-body'] === true
const delayMs = Number(args['delay-ms'] ?? 0)
const idleClose = Number(args['idle-close'] ?? 0)

const servers = new Map()
const counts = Object.create(null)

function makeServer (name) {
  const body = Buffer.from(colorBody ? name : 'ok')
  const headers = { 'content-type': 'text/plain', 'content-length': body.length }
  if (colorBody) headers['x-color'] = name
  counts[name] = 0
  const answer = (res) => { res.writeHead(200, headers); res.end(body) }
  const respond = delayMs > 0 ? (res) => setTimeout(answer, delayMs, res) : answer
  const server = http.createServer((req, res) => {
    counts[name]++
    if (idleClose > 0) {
      clearTimeout(req.socket.idleTimer)
      res.once('finish', () => { req.socket.idleTimer = setTimeout(() => req.socket.destroy(), idleClose) })
    }
    // Drain any request body before answering, so keep-alive stays usable.
    if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
      req.resume()
      req.once('end', () => respond(res))
      return
    }
    respond(res)
  })
  if (idleClose > 0) {
    server.keepAliveTimeout = 0 // no Keep-Alive: timeout=N hint; the timer above closes idle sockets
    server.on('connection', (socket) => {
      socket.idleTimer = setTimeout(() => socket.destroy(), idleClose)
      socket.once('close', () => clearTimeout(socket.idleTimer))
    })
  }
  return server
}

const go = exitWithParent(async () => {
  for (const s of servers.values()) s.closeAllConnections()
  await Promise.all([...servers.values()].map((s) => new Promise((resolve) => s.close(() => resolve()))))
})

process.on('message', (msg) => {
  if (msg?.type === 'stats') process.send({ type: 'reply', id: msg.id, counts: { ...counts } })
  else if (msg?.type === 'reset') {
    for (const n of names) counts[n] = 0
    process.send({ type: 'reply', id: msg.id })
  } else if (msg?.type === 'stop') void go(0)
})

try {
  const ports = {}
  for (const name of names) {
    const server = makeServer(name)
    servers.set(name, server)
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
    })
    ports[name] = server.address().port
  }
  process.send({ type: 'ready', servers: ports })
} catch (err) {
  reportStartupError(err)
}
