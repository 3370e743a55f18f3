// Logs as JSON lines through pino: gateway logs ({"level": ...}: start, config, changes,
// errors) and the access log ({"type": "access"}, one line per request), on stdout or a file.
// Everything bound for stdout shares one asynchronous writer, so lines never
// interleave and the request path never waits on a write.

import { mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import { pino, stdTimeFunctions, destination, type DestinationStream, type Logger } from 'pino'
import type { ColorStats, Finished } from './upstream/color-stats.js'

export type Level = 'info' | 'warn' | 'error'

type Dest = DestinationStream & { flushSync: () => void, flush: (cb?: (err?: Error) => void) => void }

/** Lines are gathered up to this many bytes before a write: one syscall for many requests. */
const BATCH_BYTES = 4096
/** ... and written at least this often, so a quiet gateway's log is never far behind. */
const FLUSH_MS = 250

/**
 * An asynchronous, batching writer that sonic-boom itself flushes every
 * FLUSH_MS (flush without a callback: a callback would make it fsync).
 */
function batched (dest: number | string): Dest {
  // A file is opened here, synchronously: sonic-boom would open it in the background, and a
  // flush at shutdown before that finished would drop every buffered line.
  if (typeof dest === 'string') {
    mkdirSync(dirname(dest), { recursive: true })
    dest = openSync(dest, 'a')
  }
  return destination({ dest, sync: false, minLength: BATCH_BYTES, periodicFlush: FLUSH_MS })
}

let stdout: Dest | undefined
/** The one stdout writer, shared by gateway and access logs so their lines never interleave. */
function stdoutDest (): Dest {
  stdout ??= batched(1)
  return stdout
}

const LEVEL = { level: (label: string) => ({ level: label }) }
const logger: Logger = pino({ base: null, timestamp: stdTimeFunctions.isoTime, formatters: LEVEL }, stdoutDest())

export function log (level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  logger[level](fields, msg)
  // Gateway events are rare and worth seeing at once.
  stdout?.flush()
}

function flush (dest: Dest): void {
  try {
    dest.flushSync()
  } catch {
    // Not open yet, or nothing pending.
  }
}

/** Writes out what is buffered for stdout (before exit). */
export function flushLogs (): void {
  if (stdout !== undefined) flush(stdout)
}

/**
 * Resolves once every line logged so far is written (at most `limitMs`), for
 * a process about to call process.exit: `log` starts an asynchronous write
 * that flushLogs cannot take over, and exit would drop its line.
 */
export async function drainLogs (limitMs = 1000): Promise<void> {
  const dest = stdout
  if (dest === undefined) return
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, limitMs)
    const done = (): void => {
      clearTimeout(timer)
      resolve()
    }
    try {
      dest.flush(done)
    } catch {
      done()
    }
  })
}

export interface AccessLog {
  write: (stats: ColorStats, done: Finished) => void
  flush: () => void
}

/** The current time as ISO 8601, formatted once per millisecond. */
let isoAt = 0
let iso = ''
function isoNow (): string {
  const now = Date.now()
  if (now !== isoAt) {
    isoAt = now
    iso = new Date(now).toISOString()
  }
  return iso
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000

/**
 * The access log: `true` for stdout, or a file path (appended, folder
 * created). One JSON line per request, written by hand (the same fields, in
 * the same order, as pino would): pino's generic serializer and a timestamp
 * per line cost about a quarter of the fast engine's throughput.
 */
export function createAccessLog (to: true | string): AccessLog {
  const dest = to === true ? stdoutDest() : batched(to)
  const s = JSON.stringify
  return {
    write: (stats, d) => {
      dest.write(`{"type":"access","time":"${isoNow()}","service":${s(stats.service)},"color":"${stats.color}","target":${s(d.target)},"method":${s(d.method)},"path":${s(d.path)},"status":${d.status},"bytes":${d.bytes},"duration":${round3(d.durationMs)},"upstream":${d.upstreamMs < 0 ? 'null' : round3(d.upstreamMs)},"requestId":${s(d.requestId)}}\n`)
    },
    flush: () => flush(dest),
  }
}
