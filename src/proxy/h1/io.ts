// Byte helpers the fast path's client and upstream sides share: heads that
// arrive in pieces are gathered in one growing buffer, and a head leaves with its body in one write.

import type net from 'node:net'

export const CRLF2 = Buffer.from('\r\n\r\n')

/**
 * Bytes copied and scanned while gathering heads that arrive in pieces (not
 * counted for a head that arrives whole): tests check it grows linearly.
 */
export const headWork = { copied: 0, scanned: 0 }

/** Whatever gathers a head that arrives in pieces: the buffer it grows in. */
export interface Gatherer {
  room: Buffer | undefined
}

/**
 * `buf` followed by `chunk`. When `buf` is a view at the start of `g.room`
 * (what this returned last time), `chunk` is copied after it in place while
 * there is room, and the room doubles when there is not: a head arriving a
 * byte at a time costs linear time, not quadratic.
 */
export function gather (g: Gatherer, buf: Buffer, chunk: Buffer): Buffer {
  const length = buf.length + chunk.length
  const room = g.room
  if (room !== undefined && buf.buffer === room.buffer && buf.byteOffset === room.byteOffset && length <= room.length) {
    chunk.copy(room, buf.length)
    headWork.copied += chunk.length
    return room.subarray(0, length)
  }
  const grown = Buffer.allocUnsafeSlow(Math.max(2 * length, 1024))
  buf.copy(grown, 0)
  chunk.copy(grown, buf.length)
  headWork.copied += length
  g.room = grown
  return grown.subarray(0, length)
}

/** Bodies up to this size leave in the same write as their head. */
const COALESCE = 16 * 1024

/** Writes text and bytes as one buffer when small, else as two writes in one syscall. */
export function writeHeadAndBody (socket: net.Socket, head: string, body: Buffer | undefined): boolean {
  if (body === undefined || body.length === 0) return socket.write(head, 'latin1')
  if (body.length <= COALESCE) {
    const headLen = head.length
    const out = Buffer.allocUnsafe(headLen + body.length)
    out.write(head, 0, headLen, 'latin1')
    body.copy(out, headLen)
    return socket.write(out)
  }
  socket.cork()
  socket.write(head, 'latin1')
  const ok = socket.write(body)
  socket.uncork()
  return ok
}
