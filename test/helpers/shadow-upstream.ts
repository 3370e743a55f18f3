// Test helpers for shadow traffic: a raw HTTP/1.1 upstream whose answers a
// test writes byte for byte, real Endpoints for it, and a recording tally and comparer.

import net from 'node:net'
import { createHash } from 'node:crypto'
import type { Timeouts, LimitsConfig } from '../../src/config/schema.js'
import type { AnswerTap } from '../../src/proxy/resolve.js'
import { TargetRegistry } from '../../src/upstream/registry.js'
import type { Endpoint } from '../../src/upstream/target-set.js'
import type { Answer, Comparer, CopyTargets, Difference, DropReason, ShadowTally, ShadowView, TallyData } from '../../src/shadow/types.js'

interface Teardown { teardown: (fn: () => unknown) => void }

/** One request the raw upstream read. */
export interface SeenRequest {
  method: string
  target: string
  /** The head as received, request line and fields, without the final empty line. */
  head: string
  /** Field lines in order, `name: value`, as received. */
  lines: string[]
  headers: Map<string, string>
  body: Buffer
  socket: net.Socket
  /** Which connection (0, 1, ...) it came on, and its place on that connection. */
  connection: number
  onConnection: number
}

export interface RawUpstream {
  url: string
  port: number
  seen: SeenRequest[]
  /** Connections accepted so far. */
  connections: number
  /** Connections closed so far. */
  closed: number
  /** Answers each request; set by the test. */
  handler: (req: SeenRequest) => void
  /** Resolves when `seen` holds at least `n` requests. */
  requests: (n: number) => Promise<void>
  /** Resolves when at least `n` connections closed. */
  closes: (n: number) => Promise<void>
}

/**
 * A keep-alive HTTP/1.1 server that reads requests (Content-Length bodies
 * only) in order on each connection and hands each to `handler`, which
 * writes whatever raw answer the test wants.
 */
export async function rawUpstream (t: Teardown, handler: (req: SeenRequest) => void = okAnswer): Promise<RawUpstream> {
  const waits: Array<() => void> = []
  const poke = (): void => { for (const w of waits.splice(0)) w() }
  const sockets = new Set<net.Socket>()
  const up: RawUpstream = {
    url: '',
    port: 0,
    seen: [],
    connections: 0,
    closed: 0,
    handler,
    requests: async (n) => { while (up.seen.length < n) await new Promise<void>((resolve) => waits.push(resolve)) },
    closes: async (n) => { while (up.closed < n) await new Promise<void>((resolve) => waits.push(resolve)) },
  }
  const server = net.createServer((socket) => {
    sockets.add(socket)
    const connection = up.connections++
    let onConnection = 0
    let buf = Buffer.alloc(0)
    socket.on('error', () => {})
    socket.on('close', () => {
      sockets.delete(socket)
      up.closed++
      poke()
    })
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        const end = buf.indexOf('\r\n\r\n')
        if (end === -1) return
        const head = buf.toString('latin1', 0, end)
        const [requestLine, ...lines] = head.split('\r\n')
        const headers = new Map<string, string>()
        for (const line of lines) {
          const colon = line.indexOf(':')
          headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim())
        }
        const length = Number(headers.get('content-length') ?? 0)
        if (buf.length < end + 4 + length) return
        const body = Buffer.from(buf.subarray(end + 4, end + 4 + length))
        buf = buf.subarray(end + 4 + length)
        const [method, target] = requestLine.split(' ')
        const req = { method, target, head, lines, headers, body, socket, connection, onConnection: onConnection++ }
        up.seen.push(req)
        poke()
        up.handler(req)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  up.port = (server.address() as net.AddressInfo).port
  up.url = `http://127.0.0.1:${up.port}`
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return up
}

/** A small JSON answer with a content-length. */
export function okAnswer (req: SeenRequest): void {
  req.socket.write(answer(200, ['content-type', 'application/json'], Buffer.from(`{"path":"${req.target}"}`)))
}

/** An answer's bytes with a content-length. */
export function answer (status: number, fields: string[], body: Buffer): Buffer {
  let head = `HTTP/1.1 ${status} X\r\n`
  for (let i = 0; i < fields.length; i += 2) head += `${fields[i]}: ${fields[i + 1]}\r\n`
  return Buffer.concat([Buffer.from(`${head}content-length: ${body.length}\r\n\r\n`, 'latin1'), body])
}

/** `body` in HTTP/1.1 chunk framing, in chunks of `size` bytes, with a trailer. */
export function chunkFramed (body: Buffer, size: number): Buffer {
  const parts: Buffer[] = []
  for (let i = 0; i < body.length; i += size) {
    const piece = body.subarray(i, i + size)
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'))
  }
  parts.push(Buffer.from('0\r\nx-trailer: yes\r\n\r\n'))
  return Buffer.concat(parts)
}

/** Writes `bytes` one byte per turn of the event loop (so the reader gets them in many reads). */
export function dribble (socket: net.Socket, bytes: Buffer, then?: () => void): void {
  let i = 0
  const next = (): void => {
    if (socket.destroyed) return
    if (i >= bytes.length) return then?.()
    socket.write(bytes.subarray(i, i + 1))
    i++
    setTimeout(next, 0)
  }
  next()
}

export const TIMEOUTS: Timeouts = { connect: 2000, response: 30_000, idleUpstream: 60_000 }

/** A real Endpoint (undici pool and raw keep-alive pool) for `url`, destroyed at teardown. */
export function endpointFor (t: Teardown, url: string, limits: LimitsConfig = { maxConnections: 16 }): Endpoint {
  const registry = new TargetRegistry()
  const target = registry.target(url)
  t.teardown(async () => await target.destroy())
  return { target, dispatcher: target.dispatcher(TIMEOUTS, limits), h1: target.h1Pool(TIMEOUTS, limits) }
}

/** Round robin over the healthy ones, as a TargetSet picks. */
export function targets (...endpoints: Endpoint[]): CopyTargets {
  let i = 0
  return {
    pick: () => {
      for (let n = 0; n < endpoints.length; n++) {
        const e = endpoints[i++ % endpoints.length]
        if (e.target.healthy) return e
      }
      return undefined
    },
  }
}

export function sha256 (b: Buffer | undefined): string | undefined {
  return b === undefined ? undefined : createHash('sha256').update(b).digest('hex')
}

/** A comparer that records every pair it is given and reports a status difference only. */
export class RecordingComparer implements Comparer {
  calls: Array<{ live: Answer, other: Answer }> = []
  compare (live: Answer, other: Answer): Difference[] {
    this.calls.push({ live, other })
    return live.status === other.status ? [] : [{ where: 'status', live: String(live.status), other: String(other.status) }]
  }
}

/** A tally that records each call, in order, and lets a test wait for results. */
export class RecordingTally implements ShadowTally {
  inflight = 0
  copies = 0
  /** 'sent', 'pair', 'noise', 'dropped:REASON' in the order they came. */
  events: string[] = []
  pairs: Array<{ diffs: readonly Difference[], bodyCompared: boolean, endpoint: string | undefined }> = []
  noises: Array<readonly Difference[]> = []
  /** The endpoint each noise probe was counted under, in order. */
  noiseEndpoints: Array<string | undefined> = []
  drops: DropReason[] = []
  private waits: Array<() => void> = []

  /** Results (pairs, noise probes, drops) so far. */
  get results (): number {
    return this.pairs.length + this.noises.length + this.drops.length
  }

  /** Resolves once at least `n` results came. */
  async settled (n: number): Promise<void> {
    while (this.results < n) await new Promise<void>((resolve) => this.waits.push(resolve))
  }

  private poke (): void {
    for (const w of this.waits.splice(0)) w()
  }

  sent (): void {
    this.copies++
    this.events.push('sent')
  }

  dropped (reason: DropReason): void {
    this.drops.push(reason)
    this.events.push(`dropped:${reason}`)
    this.poke()
  }

  pair (diffs: readonly Difference[], bodyCompared: boolean, endpoint?: string): void {
    this.pairs.push({ diffs, bodyCompared, endpoint })
    this.events.push('pair')
    this.poke()
  }

  noise (diffs: readonly Difference[], endpoint?: string): void {
    this.noises.push(diffs)
    this.noiseEndpoints.push(endpoint)
    this.events.push('noise')
    this.poke()
  }

  view (): ShadowView {
    const drops = { busy: 0, no_target: 0, failed: 0, body_too_large: 0 }
    for (const d of this.drops) drops[d]++
    const differed = this.pairs.filter((p) => p.diffs.length > 0).length
    return {
      sent: this.copies,
      compared: this.pairs.length,
      matched: this.pairs.length - differed,
      differed,
      dropped: this.drops.length,
      noise: 0,
      top: [],
      drops,
      bodyNotCompared: this.pairs.filter((p) => !p.bodyCompared).length,
      noiseWhere: [],
      probes: this.noises.length,
    }
  }

  data (): TallyData {
    const v = this.view()
    return { sent: v.sent, drops: v.drops, bodyNotCompared: v.bodyNotCompared, probes: v.probes, endpoints: [], pairs: [], overflow: 0, examples: [], noise: [] }
  }
}

/** What a test shows a tap: the live request and its answer, as an engine would. */
export interface LiveExchange {
  method?: string
  target?: string
  fields?: string | string[]
  requestBody?: Buffer[]
  status?: number
  answerFields?: string | Array<string | Buffer>
  chunked?: boolean
  body?: Buffer[]
}

/** Shows `tap` a whole exchange, then ends it. */
export function drive (tap: AnswerTap, live: LiveExchange = {}): void {
  const method = live.method ?? 'GET'
  tap.request(method, live.target ?? '/', live.fields ?? 'host: example.test\r\nx-request-id: r1\r\naccept: */*\r\n')
  const body = live.requestBody ?? []
  body.forEach((chunk, i) => tap.requestBody(chunk, i === body.length - 1))
  tap.head(live.status ?? 200, live.answerFields ?? 'content-type: application/json\r\n', live.chunked ?? false)
  for (const chunk of live.body ?? []) tap.body(chunk)
  tap.end()
}
