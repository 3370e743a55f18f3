// The audit log of routing changes: an in-memory ring served by /v1/events
// and a JSONL file beside the state file that survives restarts.

import { appendFile, mkdir, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Color } from '../config/schema.js'

export type EventType = 'flip' | 'rollback' | 'auto_revert' | 'targets' | 'drained' | 'health' | 'reload' | 'start'

export interface ColorChange {
  service: string
  from: Color
  to: Color
}

export interface NewEvent {
  type: EventType
  generation: number
  reason: string | null
  actor: string
  changes?: ColorChange[]
  [extra: string]: unknown
}

export interface SwitchyardEvent extends NewEvent {
  id: number
  time: string
}

const RING_SIZE = 1000
const TAIL_BYTES = 256 * 1024

export class EventLog {
  readonly file: string | undefined
  private readonly ring: SwitchyardEvent[] = []
  private nextId = 1
  private writes: Promise<void> = Promise.resolve()
  /** The file ends in a torn line (a crash mid-append): the next append starts a new line. */
  private isTorn = false

  constructor (file?: string) {
    this.file = file
  }

  /** Reloads the newest events from the file so ids keep growing across restarts. */
  async restore (): Promise<void> {
    if (this.file === undefined) return
    let fh
    try {
      fh = await open(this.file, 'r')
    } catch {
      return
    }
    try {
      const { size } = await fh.stat()
      const start = Math.max(0, size - TAIL_BYTES)
      const buf = Buffer.alloc(size - start)
      await fh.read(buf, 0, buf.length, start)
      this.isTorn = buf.length > 0 && buf[buf.length - 1] !== 0x0a
      const lines = buf.toString('utf8').split('\n')
      if (start > 0) lines.shift() // first line may be cut
      for (const line of lines) {
        if (line.trim() === '') continue
        try {
          const ev = JSON.parse(line) as SwitchyardEvent
          if (typeof ev.id === 'number') this.push(ev)
        } catch {
          // A torn last line from a crash is skipped, not fatal.
        }
      }
    } finally {
      await fh.close()
    }
  }

  private push (ev: SwitchyardEvent): void {
    this.ring.push(ev)
    if (this.ring.length > RING_SIZE) this.ring.shift()
    this.nextId = Math.max(this.nextId, ev.id + 1)
  }

  /** Records an event; the file append is queued so lines never interleave. */
  append (input: NewEvent): SwitchyardEvent {
    const ev: SwitchyardEvent = { id: this.nextId, time: new Date().toISOString(), ...input }
    this.push(ev)
    if (this.file !== undefined) {
      const file = this.file
      const line = (this.isTorn ? '\n' : '') + JSON.stringify(ev) + '\n'
      this.isTorn = false
      this.writes = this.writes
        .then(async () => {
          await mkdir(dirname(file), { recursive: true })
          await appendFile(file, line)
        })
        .catch((err: Error) => { process.emitWarning(`events file ${file}: ${err.message}`) })
    }
    return ev
  }

  /** Events newer than `since` (all kept ones when undefined), oldest first. */
  list (since?: number): SwitchyardEvent[] {
    if (since === undefined) return [...this.ring]
    return this.ring.filter((e) => e.id > since)
  }

  async flush (): Promise<void> {
    await this.writes
  }
}
