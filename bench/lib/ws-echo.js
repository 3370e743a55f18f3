// WebSocket echo for the backend child (backend.js --ws-echo): every server
// also accepts WebSocket upgrades (the `ws` package) and answers each message
// with "NAME:message", so a client can tell which color echoed it. The 101
// carries `x-color: NAME` too.
// { type: 'ws-stats' } replies { servers: { NAME: { opened, open, closed,
// closeCodes: { code: n }, echoed, errors } } }: the close codes are the ones
// this server received, i.e. what the gateway sent upstream.
// When the child is told to stop (IPC 'stop', disconnect, SIGTERM/SIGINT),
// open WebSockets are terminated so the HTTP server's close() can finish.

import { WebSocketServer } from 'ws'

const all = new Map()
let hooked = false

function terminateAll () {
  for (const { wss } of all.values()) for (const ws of wss.clients) ws.terminate()
}

function hook () {
  if (hooked) return
  hooked = true
  process.on('message', (msg) => {
    if (msg?.type === 'ws-stats') {
      const servers = {}
      for (const [name, s] of all) servers[name] = { ...s.stats, closeCodes: { ...s.stats.closeCodes }, open: s.wss.clients.size }
      process.send({ type: 'reply', id: msg.id, servers })
    } else if (msg?.type === 'stop') terminateAll()
  })
  process.on('disconnect', terminateAll)
  process.on('SIGTERM', terminateAll)
  process.on('SIGINT', terminateAll)
}

/** Echoes WebSocket messages on `server` (an http.Server), prefixed with `name:`. */
export function attachWsEcho (name, server) {
  hook()
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  const stats = { opened: 0, closed: 0, closeCodes: {}, echoed: 0, errors: 0 }
  all.set(name, { wss, stats })
  wss.on('headers', (headers) => headers.push(`x-color: ${name}`))
  wss.on('connection', (ws) => {
    stats.opened++
    ws.on('message', (data, isBinary) => {
      stats.echoed++
      ws.send(isBinary ? data : `${name}:${data}`, { binary: isBinary })
    })
    ws.on('error', () => { stats.errors++ })
    ws.on('close', (code) => {
      stats.closed++
      stats.closeCodes[code] = (stats.closeCodes[code] ?? 0) + 1
    })
  })
  return wss
}
