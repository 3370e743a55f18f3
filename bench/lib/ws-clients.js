// Child process: N WebSocket clients (the `ws` package) through the gateway,
// for the drain bench. They never reconnect: a close is recorded, not undone.
//   node ws-clients.js --url ws://127.0.0.1:PORT/ws --count 200 [--interval 500] [--size 32]
// Opens all sockets, then reports { type: 'ready', opened, failed, colors, openMs }
// (colors: the `x-color` header of each 101, as the backend sets it).
// { type: 'start' }: every socket sends a message every `interval` ms (first
// one after a random part of the interval, so they do not all send at once)
// and checks that the echo is "COLOR:message" for the color it opened on.
// { type: 'report' } replies { sockets: [...] }, per socket: color, openAt,
// closeAt, code, reason, sent, echoed, mismatched, pending (sent but not
// echoed when it closed), echoTimes, rtts, errors.
// Times are performance.timeOrigin + performance.now() (ms since the epoch),
// comparable with the other processes on this machine.

import WebSocket from 'ws'
import { exitWithParent, parseArgs, reportStartupError } from './children.js'

const args = parseArgs()
const url = String(args.url)
const count = Number(args.count ?? 200)
const interval = Number(args.interval ?? 500)
const size = Number(args.size ?? 32)
const now = () => performance.timeOrigin + performance.now()

const sockets = []
const pad = 'x'.repeat(Math.max(0, size - 12))

const go = exitWithParent(async () => {
  for (const s of sockets) { clearTimeout(s.timer); clearInterval(s.timer); s.ws?.terminate() }
})

function open (i) {
  const s = {
    i, ws: undefined, color: null, openAt: null, closeAt: null, code: null, reason: null,
    sent: 0, echoed: 0, mismatched: 0, pendingMap: new Map(), echoTimes: [], rtts: [], errors: [], timer: undefined, openError: null,
  }
  sockets.push(s)
  return new Promise((resolve) => {
    const ws = s.ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 10_000 })
    ws.on('upgrade', (res) => { s.color = res.headers['x-color'] ?? null })
    ws.on('open', () => { s.openAt = now(); resolve() })
    ws.on('unexpected-response', (_req, res) => {
      s.openError = `HTTP ${res.statusCode}`
      res.resume()
      ws.terminate()
    })
    ws.on('error', (err) => {
      if (s.openAt === null && s.openError === null) s.openError = err.message
      if (s.errors.length < 5) s.errors.push(err.message)
    })
    ws.on('message', (data) => {
      const t = now()
      const text = String(data)
      const colon = text.indexOf(':')
      const color = text.slice(0, colon)
      const msg = text.slice(colon + 1)
      const sentAt = s.pendingMap.get(msg)
      if (colon === -1 || color !== s.color || sentAt === undefined) { s.mismatched++; return }
      s.pendingMap.delete(msg)
      s.echoed++
      s.echoTimes.push(t)
      s.rtts.push(t - sentAt)
    })
    ws.on('close', (code, reason) => {
      s.closeAt = now()
      s.code = code
      s.reason = String(reason)
      clearTimeout(s.timer)
      clearInterval(s.timer)
      resolve() // a socket that never opened
    })
  })
}

function chat (s) {
  const send = () => {
    if (s.ws.readyState !== WebSocket.OPEN) return
    const msg = `${s.i}.${s.sent}.${pad}`
    s.pendingMap.set(msg, now())
    s.sent++
    s.ws.send(msg)
  }
  s.timer = setTimeout(() => {
    send()
    s.timer = setInterval(send, interval)
  }, Math.random() * interval)
}

process.on('message', (msg) => {
  if (msg?.type === 'start') {
    for (const s of sockets) if (s.openAt !== null && s.closeAt === null) chat(s)
    process.send({ type: 'reply', id: msg.id, at: now() })
  } else if (msg?.type === 'report') {
    process.send({
      type: 'reply',
      id: msg.id,
      sockets: sockets.map(({ ws, pendingMap, timer, ...rest }) => ({ ...rest, pending: pendingMap.size, open: ws.readyState === WebSocket.OPEN })),
    })
  } else if (msg?.type === 'stop') void go(0)
})

try {
  if (!(count > 0) || !(interval > 0)) throw new Error('--count and --interval must be positive')
  const t0 = now()
  // Open in batches, so 200 handshakes do not all hit the listen backlog at once.
  for (let i = 0; i < count; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, count - i) }, (_, k) => open(i + k)))
  }
  const colors = {}
  for (const s of sockets) if (s.openAt !== null) colors[s.color] = (colors[s.color] ?? 0) + 1
  const failed = sockets.filter((s) => s.openAt === null)
  process.send({ type: 'ready', opened: count - failed.length, failed: failed.length, failures: failed.slice(0, 5).map((s) => s.openError), colors, openMs: now() - t0 })
} catch (err) {
  reportStartupError(err)
}
