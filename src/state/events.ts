// The audit log: changes (flip, rollback, auto_revert, targets, reload) and
// health noise (health, drained) in separate in-memory rings and separate JSONL
// files beside the state file (changes fsynced), each rotated by size, served merged by /v1/events.

import { mkdir, open, rename, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Color } from '../config/schema.js'
import { log } from '../log.js'

export type EventType = 'flip' | 'rollback' | 'auto_revert' | 'targets' | 'drained' | 'health' | 'reload' | 'start' | 'import' | 'release' | 'shadow'

/** Events of changes to routing state; every other type is health noise. */
const CHANGE_TYPES: ReadonlySet<EventType> = new Set<EventType>(['flip', 'rollback', 'auto_revert', 'targets', 'reload', 'start', 'import', 'release', 'shadow'])

export function isChange (type: EventType): boolean {
  return CHANGE_TYPES.has(type)
}

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

export interface EventLogOptions {
  /** Each file is rotated (events.jsonl -> events.jsonl.1) before it would grow past this. Default 10 MiB. */
  maxBytes?: number
  /** Rotated files kept (events.jsonl.1 .. .N); restore reads them all. Default 1. */
  keep?: number
  /** Events kept in memory per kind (changes, health). Default 1000. */
  ringSize?: number
}

interface Line {
  file: string
  text: string
  durable: boolean
  resolve: () => void
  reject: (err: Error) => void
}

/** Where health noise goes beside the changes file: events.jsonl -> events.health.jsonl. */
function noiseFileOf (file: string): string {
  return /\.jsonl$/.test(file) ? file.replace(/\.jsonl$/, '.health.jsonl') : `${file}.health`
}

/** How far ids jump at a restart: more than the events a crash can catch served but not yet written. */
export const RESTART_ID_GAP = 1000

export class EventLog {
  /** Change events. Health noise has a file of its own (noiseFileOf), so however much of it rotates away, changes stay. */
  readonly file: string | undefined
  readonly noiseFile: string | undefined
  private readonly maxBytes: number
  private readonly keep: number
  private readonly ringSize: number
  private readonly changes: SwitchyardEvent[] = []
  private readonly noise: SwitchyardEvent[] = []
  /** Ids of change events written or being written whose change is not decided yet. */
  private readonly pending = new Set<number>()
  private nextId = 1
  private queue: Line[] = []
  private writing: Promise<void> | undefined
  /** The file's folder entry may not be on disk yet (at start, after a rotation). */
  private needsDirSync = true

  constructor (file?: string, opts: EventLogOptions = {}) {
    this.file = file
    this.noiseFile = file === undefined ? undefined : noiseFileOf(file)
    this.maxBytes = opts.maxBytes ?? 10 * 1024 * 1024
    this.keep = Math.max(1, opts.keep ?? 1)
    this.ringSize = opts.ringSize ?? 1000
  }

  /** Oldest first: FILE.N .. FILE.1, FILE. */
  private files (file: string | undefined): string[] {
    if (file === undefined) return []
    const out: string[] = []
    for (let i = this.keep; i >= 1; i--) out.push(`${file}.${i}`)
    out.push(file)
    return out
  }

  /**
   * Reloads the kept files so ids keep growing and the rings survive restarts.
   *
   * A change event is written before the state file (see LocalStore.commit),
   * so the file can hold the event of a change that never happened: the
   * state write failed, or the process died between the two. Such an event
   * has a generation above the state file's, or is followed by another
   * change event of the same generation (generations only grow on a commit);
   * both are left out. `committedGeneration` is the state file's generation,
   * undefined when there is none. (A changes file written before health
   * noise had its own holds noise too; it is sorted out by type.)
   */
  async restore (committedGeneration?: number): Promise<void> {
    let dropped = 0
    for (const file of [...this.files(this.file), ...this.files(this.noiseFile)]) {
      let text: string
      try {
        text = await readTail(file, this.maxBytes)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log('warn', 'events file cannot be read; its events are not served', { file, error: (err as Error).message })
        continue
      }
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue
        let ev: SwitchyardEvent
        try {
          ev = JSON.parse(line) as SwitchyardEvent
        } catch {
          continue // a torn line from a crash mid-append is skipped, not fatal
        }
        if (typeof ev.id !== 'number') continue
        this.nextId = Math.max(this.nextId, ev.id + 1)
        if (!isChange(ev.type)) {
          this.push(this.noise, ev)
          continue
        }
        while (this.changes.length > 0 && this.changes[this.changes.length - 1].generation === ev.generation) {
          this.changes.pop()
          dropped++
        }
        this.push(this.changes, ev)
      }
    }
    if (committedGeneration !== undefined) {
      while (this.changes.length > 0 && this.changes[this.changes.length - 1].generation > committedGeneration) {
        this.changes.pop()
        dropped++
      }
    }
    // Noise came from two sets of files (the changes file of an older version held it too).
    this.noise.sort((a, b) => a.id - b.id)
    // Health events (and auto-reverts) are served before their line is written: a crash can lose
    // lines whose ids a reader already holds. Ids go on past any such gap, so `?since` never skips.
    if (this.nextId > 1) this.nextId += RESTART_ID_GAP
    if (dropped > 0) log('warn', 'events of changes that never committed are left out', { file: this.file, dropped })
  }

  private push (ring: SwitchyardEvent[], ev: SwitchyardEvent): void {
    ring.push(ev)
    if (ring.length > this.ringSize) ring.shift()
  }

  private create (input: NewEvent): SwitchyardEvent {
    return { id: this.nextId++, time: new Date().toISOString(), ...input }
  }

  /**
   * Records a health or drain event: visible at once, written to the file
   * without waiting and without fsync (a failed write is only a warning).
   */
  append (input: NewEvent): SwitchyardEvent {
    const ev = this.create(input)
    this.push(isChange(ev.type) ? this.changes : this.noise, ev)
    this.write(ev, false).catch((err: Error) => { log('warn', 'events file write failed', { file: this.file, error: err.message }) })
    return ev
  }

  /**
   * A change event, not yet visible: it takes its id now, and until it is
   * published or discarded, events with later ids are held back from list()
   * so a reader polling with ?since never skips it.
   */
  prepare (input: NewEvent): SwitchyardEvent {
    const ev = this.create(input)
    this.pending.add(ev.id)
    return ev
  }

  /** Appends a prepared change event and fsyncs the file; rejects when it cannot. */
  async persist (ev: SwitchyardEvent): Promise<void> {
    await this.write(ev, true)
  }

  /** The change happened: its event becomes visible. */
  publish (ev: SwitchyardEvent): void {
    this.pending.delete(ev.id)
    this.push(this.changes, ev)
  }

  /** The change did not happen: its event is never served (restore drops its line too). */
  discard (ev: SwitchyardEvent): void {
    this.pending.delete(ev.id)
  }

  private async write (ev: SwitchyardEvent, durable: boolean): Promise<void> {
    if (this.file === undefined || this.noiseFile === undefined) return
    const file = isChange(ev.type) ? this.file : this.noiseFile
    const text = JSON.stringify(ev) + '\n'
    await new Promise<void>((resolve, reject) => {
      this.queue.push({ file, text, durable, resolve, reject })
      this.writing ??= this.drain()
    })
  }

  /** One writer: lines queued meanwhile go out together, in id order per file, with one fsync per file. */
  private async drain (): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue
      this.queue = []
      for (const file of new Set(batch.map((l) => l.file))) {
        const lines = batch.filter((l) => l.file === file)
        try {
          await this.writeBatch(file, lines.map((l) => l.text), lines.some((l) => l.durable))
          for (const l of lines) l.resolve()
        } catch (err) {
          for (const l of lines) l.reject(err as Error)
        }
      }
    }
    this.writing = undefined
  }

  /**
   * Opens the file for each batch (so an outside move or rotation is
   * followed), rotates it whenever the next line would take it past
   * maxBytes, and starts on a new line when the file ends in a torn one.
   */
  private async writeBatch (file: string, lines: string[], durable: boolean): Promise<void> {
    await mkdir(dirname(file), { recursive: true })
    let i = 0
    while (i < lines.length) {
      const fh: FileHandle = await open(file, 'a+', 0o644)
      let full = false
      try {
        const { size } = await fh.stat()
        let chunk = ''
        if (size > 0) {
          const last = Buffer.alloc(1)
          await fh.read(last, 0, 1, size - 1)
          if (last[0] !== 0x0a) chunk = '\n'
        } else if (file === this.file) {
          this.needsDirSync = true
        }
        let bytes = size + chunk.length
        // At least one line per file, however long.
        while (i < lines.length && (bytes === 0 || bytes + Buffer.byteLength(lines[i]) <= this.maxBytes)) {
          bytes += Buffer.byteLength(lines[i])
          chunk += lines[i++]
        }
        full = i < lines.length
        if (chunk !== '') await fh.write(chunk)
        if (durable) await fh.datasync()
      } finally {
        await fh.close()
      }
      if (full) {
        await this.rotate(file)
        if (file === this.file) this.needsDirSync = true
      }
    }
    // A new file (first write, or after a rotation) is durable only once its folder entry is.
    if (durable && this.needsDirSync) {
      await syncDir(dirname(file))
      this.needsDirSync = false
    }
  }

  private async rotate (file: string): Promise<void> {
    for (let i = this.keep; i >= 1; i--) {
      const from = i === 1 ? file : `${file}.${i - 1}`
      await rename(from, `${file}.${i}`).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
    }
  }

  /** Events newer than `since` (all kept ones when undefined), oldest first: changes and health merged by id. */
  list (since = 0): SwitchyardEvent[] {
    let horizon = Infinity
    for (const id of this.pending) horizon = Math.min(horizon, id)
    const out: SwitchyardEvent[] = []
    let i = 0
    let j = 0
    const a = this.changes
    const b = this.noise
    while (i < a.length || j < b.length) {
      const ev = j >= b.length || (i < a.length && a[i].id < b[j].id) ? a[i++] : b[j++]
      if (ev.id >= horizon) break
      if (ev.id > since) out.push(ev)
    }
    return out
  }

  async flush (): Promise<void> {
    while (this.writing !== undefined) await this.writing
  }
}

async function syncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** A file's text; of one larger than `max` (a log from before rotation), its last `max` bytes from a line start. */
async function readTail (file: string, max: number): Promise<string> {
  const fh = await open(file, 'r')
  try {
    const { size } = await fh.stat()
    const start = Math.max(0, size - max)
    const buf = Buffer.alloc(size - start)
    await fh.read(buf, 0, buf.length, start)
    const text = buf.toString('utf8')
    return start === 0 ? text : text.slice(text.indexOf('\n') + 1)
  } finally {
    await fh.close()
  }
}
