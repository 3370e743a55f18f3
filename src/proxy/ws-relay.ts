// Relays an established WebSocket between client and upstream, tracking frame
// boundaries in both directions so the gateway can end it with a proper close
// frame (1001 going away) without cutting a frame in half.

import { randomBytes } from 'node:crypto'
import type { Duplex } from 'node:stream'

/**
 * Follows RFC 6455 frame headers in a byte stream. `consume` reports how many
 * bytes of a chunk to pass on: all of them, or with `stopAtBoundary` only up
 * to the first point between two frames.
 */
export class FrameCursor {
  /** Payload bytes left in the current frame. */
  private remaining = 0
  /** Bytes of a frame header split across chunks. */
  private header: number[] = []

  get atBoundary (): boolean {
    return this.remaining === 0 && this.header.length === 0
  }

  consume (chunk: Buffer, stopAtBoundary: boolean): number {
    let i = 0
    while (i < chunk.length) {
      if (stopAtBoundary && this.atBoundary) return i
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - i)
        this.remaining -= take
        i += take
        continue
      }
      this.header.push(chunk[i++])
      const need = headerSize(this.header)
      if (need !== undefined && this.header.length === need) {
        this.remaining = payloadLength(this.header)
        this.header = []
      }
    }
    return chunk.length
  }
}

/** Total header size once the first two bytes are known. */
function headerSize (h: number[]): number | undefined {
  if (h.length < 2) return undefined
  const len7 = h[1] & 0x7f
  const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0
  return 2 + ext + ((h[1] & 0x80) !== 0 ? 4 : 0)
}

function payloadLength (h: number[]): number {
  const len7 = h[1] & 0x7f
  if (len7 < 126) return len7
  if (len7 === 126) return (h[2] << 8) | h[3]
  let n = 0
  for (let i = 2; i < 10; i++) n = n * 256 + h[i]
  return n
}

/** A close frame; frames toward a server must be masked (RFC 6455 5.3). */
export function closeFrame (code: number, reason: string, masked: boolean): Buffer {
  const text = Buffer.from(reason)
  const payload = Buffer.alloc(2 + text.length)
  payload.writeUInt16BE(code, 0)
  text.copy(payload, 2)
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload])
  const mask = randomBytes(4)
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3]
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload])
}

/** How long a going-away close may wait for a frame to finish and for peers to hang up. */
const CLOSE_GRACE_MS = 1000

export class WsRelay {
  private readonly client: Duplex
  private readonly upstream: Duplex
  private readonly toUpstream = new FrameCursor()
  private readonly toClient = new FrameCursor()
  private closing: { code: number, reason: string, sentClient: boolean, sentUpstream: boolean, timer: NodeJS.Timeout } | undefined
  private done = false
  private readonly onEnd: (relay: WsRelay) => void

  /** `onEnd` runs exactly once, when either side goes away. */
  constructor (client: Duplex, upstream: Duplex, onEnd: (relay: WsRelay) => void) {
    this.client = client
    this.upstream = upstream
    this.onEnd = onEnd
    client.on('data', (chunk: Buffer) => this.relay(chunk, this.toUpstream, upstream, client))
    upstream.on('data', (chunk: Buffer) => this.relay(chunk, this.toClient, client, upstream))
    const end = (): void => this.end()
    client.on('close', end)
    upstream.on('close', end)
    client.on('error', end)
    upstream.on('error', end)
    client.on('end', () => upstream.end())
    upstream.on('end', () => client.end())
    // Either side may have gone while the handshake finished.
    if (client.destroyed || upstream.destroyed) queueMicrotask(end)
  }

  /** Bytes read past either handshake: client-to-upstream and upstream-to-client. */
  prime (fromClient: Buffer, fromUpstream: Buffer): void {
    if (fromUpstream.length > 0) this.relay(fromUpstream, this.toClient, this.client, this.upstream)
    if (fromClient.length > 0) this.relay(fromClient, this.toUpstream, this.upstream, this.client)
  }

  private relay (chunk: Buffer, cursor: FrameCursor, dst: Duplex, src: Duplex): void {
    if (this.closing === undefined) {
      cursor.consume(chunk, false)
      if (!dst.write(chunk)) {
        src.pause()
        dst.once('drain', () => src.resume())
      }
      return
    }
    // Going away: pass on the rest of the current frame only, then close this direction.
    const n = cursor.consume(chunk, true)
    if (n > 0 && !this.sentTo(dst)) dst.write(chunk.subarray(0, n))
    this.sendCloses()
  }

  private sentTo (dst: Duplex): boolean {
    return dst === this.client ? this.closing?.sentClient === true : this.closing?.sentUpstream === true
  }

  /** Sends each side a close frame as soon as its direction is between frames. */
  private sendCloses (): void {
    const c = this.closing
    if (c === undefined) return
    if (!c.sentClient && this.toClient.atBoundary) {
      c.sentClient = true
      this.client.write(closeFrame(c.code, c.reason, false))
    }
    if (!c.sentUpstream && this.toUpstream.atBoundary) {
      c.sentUpstream = true
      this.upstream.write(closeFrame(c.code, c.reason, true))
    }
    if (c.sentClient && c.sentUpstream) {
      // Both told: let the close frames flush, then hang up (the grace timer destroys stragglers).
      this.client.end()
      this.upstream.end()
    }
  }

  /**
   * Ends the WebSocket with a close frame to both sides (default 1001 going
   * away), then hangs up after a short grace whatever the peers do.
   */
  goAway (code = 1001, reason = 'going away'): void {
    if (this.done || this.closing !== undefined) return
    const timer = setTimeout(() => this.destroy(), CLOSE_GRACE_MS)
    timer.unref()
    this.closing = { code, reason, sentClient: false, sentUpstream: false, timer }
    this.sendCloses()
  }

  /** Closable: a drain deadline or shutdown ends it with 1001. */
  close (): void {
    this.goAway(1001, 'going away')
  }

  destroy (): void {
    this.client.destroy()
    this.upstream.destroy()
    this.end()
  }

  private end (): void {
    if (this.done) return
    this.done = true
    if (this.closing !== undefined) clearTimeout(this.closing.timer)
    this.client.destroy()
    this.upstream.destroy()
    this.onEnd(this)
  }
}
