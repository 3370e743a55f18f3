// A raw HTTP/1.x exchange on a fresh socket, for requests that client
// libraries would not send as written (dot-segments, duplicate or hop-by-hop headers).

import net from 'node:net'

export interface RawReply {
  status: number
  /** Header names lowercased; repeated headers joined with ', '. */
  headers: Record<string, string>
  body: string
  json: any
}

/**
 * Writes `head` (the whole request, with its blank line and any body) and
 * reads one answer: its head, then a Content-Length body, or up to the close.
 * A 101 answer is returned as soon as its head is in.
 */
export async function rawRequest (port: number, head: string, timeoutMs = 5000): Promise<RawReply> {
  return await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(head))
    let buf = Buffer.alloc(0)
    let done = false
    const timer = setTimeout(() => finish(new Error(`no complete answer within ${timeoutMs} ms: ${buf.toString('latin1')}`)), timeoutMs)
    const finish = (err?: Error, reply?: RawReply): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      if (err !== undefined) reject(err)
      else resolve(reply as RawReply)
    }
    const parse = (closed: boolean): void => {
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) {
        if (closed) finish(new Error(`connection closed before a full head: ${JSON.stringify(buf.toString('latin1'))}`))
        return
      }
      const lines = buf.toString('latin1', 0, end).split('\r\n')
      const status = Number(lines[0].split(' ')[1])
      const headers: Record<string, string> = {}
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':')
        const name = line.slice(0, colon).toLowerCase()
        const value = line.slice(colon + 1).trim()
        headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
      }
      const rest = buf.subarray(end + 4)
      const length = headers['content-length'] === undefined ? -1 : Number(headers['content-length'])
      const chunked = /chunked/i.test(headers['transfer-encoding'] ?? '')
      const decoded = chunked ? dechunk(rest) : undefined
      if (status === 101 || (length !== -1 && rest.length >= length) || decoded !== undefined || closed) {
        const body = (decoded ?? (length === -1 ? rest : rest.subarray(0, length))).toString()
        let json: unknown
        try {
          json = JSON.parse(body)
        } catch {
          json = undefined
        }
        finish(undefined, { status, headers, body, json })
      }
    }
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c])
      parse(false)
    })
    socket.on('end', () => parse(true))
    socket.on('close', () => parse(true))
    socket.on('error', (err) => finish(err))
  })
}

/** A WebSocket handshake request for `path`, with extra header lines (each `name: value`). */
export function wsHandshake (path: string, extra: string[] = []): string {
  return [`GET ${path} HTTP/1.1`, 'host: gw.test', 'upgrade: websocket', 'connection: Upgrade',
    'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version: 13', ...extra, '', ''].join('\r\n')
}

/** A whole chunked body decoded, or undefined while it is incomplete. */
function dechunk (buf: Buffer): Buffer | undefined {
  const parts: Buffer[] = []
  let at = 0
  for (;;) {
    const eol = buf.indexOf('\r\n', at)
    if (eol === -1) return undefined
    const size = parseInt(buf.toString('latin1', at, eol).split(';')[0], 16)
    if (size === 0) return Buffer.concat(parts)
    if (buf.length < eol + 2 + size + 2) return undefined
    parts.push(buf.subarray(eol + 2, eol + 2 + size))
    at = eol + 2 + size + 2
  }
}

/**
 * Writes `text` (in parts, when a list) to the gateway on a fresh socket and
 * collects what comes back until `done` says so, the socket closes, or
 * `limitMs` passes.
 */
export async function exchange (port: number, text: string | string[], done: (got: string) => boolean = () => false, limitMs = 5000): Promise<string> {
  return await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      for (const part of Array.isArray(text) ? text : [text]) s.write(part)
    })
    let got = ''
    const timer = setTimeout(() => s.destroy(), limitMs)
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1')
      if (done(got)) s.destroy()
    })
    s.on('error', () => {})
    s.on('close', () => {
      clearTimeout(timer)
      resolve(got)
    })
  })
}

/** How many times `what` occurs in `text`. */
export const count = (text: string, what: string): number => text.split(what).length - 1

export interface RawUpstream {
  url: string
  /** Connections accepted so far. */
  connections: () => number
  /** Connections open now, and the most open at once. */
  open: () => number
  maxOpen: () => number
}

/**
 * An upstream on raw sockets, for answers no HTTP library would send:
 * `answer` gets each read's bytes, the socket, and how many reads that
 * socket had. Closed (with its sockets) at teardown.
 */
export async function rawUpstream (t: { teardown: (fn: () => unknown) => void }, answer: (socket: net.Socket, data: string, n: number) => void): Promise<RawUpstream> {
  let connections = 0
  let open = 0
  let maxOpen = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    connections++
    maxOpen = Math.max(maxOpen, ++open)
    sockets.add(socket)
    let n = 0
    // As node:http does: a separate write leaves at once, not held back (Nagle) until the gateway's next packet.
    socket.setNoDelay(true)
    socket.on('error', () => {})
    socket.on('close', () => { open--; sockets.delete(socket) })
    socket.on('data', (d: Buffer) => answer(socket, d.toString('latin1'), ++n))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    connections: () => connections,
    open: () => open,
    maxOpen: () => maxOpen,
  }
}
