// Persists routing state (live/previous colors, generation, admin-set targets)
// to one JSON file: temp file, fsync, rename, fsync of the folder.

import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { isColor, type Color } from '../config/schema.js'
import { isSample, parseOrigin } from '../config/values.js'
import { parseStoredReleases, type Release } from '../release/model.js'
import type { RoutingState, ServiceState, ShadowOverride } from '../routing/snapshot.js'

export interface PersistedState extends RoutingState {
  /** Services of the last color change: what a bare rollback reverts. */
  lastChange: string[]
  /** Releases: every running one and the last finished ones, oldest first. */
  releases?: Release[]
}

/** What to do about a state file that cannot be read. */
const FILE_REMEDY = 'Fix or move it away; it is never replaced by defaults'

/** A stored state that cannot be read: `where` names what holds it (a state file, an etcd key, an import file). */
export class StateFileError extends Error {
  constructor (where: string, problem: string, remedy = FILE_REMEDY) {
    super(`${where}: ${problem}.${remedy === '' ? '' : ` ${remedy}`}`)
    this.name = 'StateFileError'
  }
}

export class FileStateStore {
  readonly file: string
  constructor (file: string) {
    this.file = file
  }

  /** The saved state; undefined only when the file does not exist. Anything unreadable throws. */
  async load (): Promise<PersistedState | undefined> {
    await this.removeStaleTemps()
    let text: string
    try {
      text = await readFile(this.file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw new StateFileError(`state file ${this.file}`, `cannot read: ${(err as Error).message}`)
    }
    return parseStateDocument(text, `state file ${this.file}`)
  }

  /**
   * Temp files of saves a dead process never finished (`state.json.<pid>.tmp`).
   * Our own pid counts as dead: nothing has been saved yet, and in a container
   * every start has the same pid. A live process's file is left alone.
   */
  private async removeStaleTemps (): Promise<void> {
    const prefix = basename(this.file) + '.'
    let names: string[]
    try {
      names = await readdir(dirname(this.file))
    } catch {
      return
    }
    for (const name of names) {
      if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue
      const pid = name.slice(prefix.length, -'.tmp'.length)
      if (!/^\d+$/.test(pid) || (Number(pid) !== process.pid && isAlive(Number(pid)))) continue
      await unlink(join(dirname(this.file), name)).catch(() => {})
    }
  }

  async save (state: PersistedState): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true })
    const tmp = `${this.file}.${process.pid}.tmp`
    const body = JSON.stringify({ version: 1, ...state }, null, 2) + '\n'
    const fh = await open(tmp, 'w', 0o644)
    try {
      try {
        await fh.writeFile(body)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await rename(tmp, this.file)
    } catch (err) {
      // A failed write (disk full) or rename must not leave a temp file behind.
      await unlink(tmp).catch(() => {})
      throw err
    }
    // The rename is durable only once the folder entry is. The new file is
    // already in place, so a failure here must not report "nothing changed".
    try {
      const dir = await open(dirname(this.file), 'r')
      await dir.sync().finally(async () => await dir.close())
    } catch (err) {
      process.emitWarning(`state file ${this.file}: folder fsync failed: ${(err as Error).message}`)
    }
  }
}

/** A stored shadow override, or `wrong()` (which throws) for anything else. */
/** The last instant a Date can hold (ECMAScript's time range). */
const MAX_DATE_MS = 8.64e15

function parseShadowOverride (value: unknown, wrong: () => never): ShadowOverride {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return wrong()
  const v = value as Record<string, unknown>
  const keys = Object.keys(v)
  if (v.off === true && keys.length === 1) return { off: true }
  const { sample, until } = v
  if (keys.some((k) => k !== 'sample' && k !== 'until')) return wrong()
  if (!isSample(sample)) return wrong()
  if (until === undefined) return { sample }
  // A Date holds at most 8.64e15 ms: beyond it the session's end cannot be written (GET .../shadow would throw).
  if (typeof until !== 'number' || !Number.isSafeInteger(until) || until < 0 || until > MAX_DATE_MS) return wrong()
  return { sample, until }
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Parses and checks the text of a state document (the file, an etcd value,
 * an import): anything off throws a StateFileError naming `where` and the field.
 */
export function parseStateDocument (text: string, where: string, remedy = FILE_REMEDY): PersistedState {
  const bad = (what: string): never => { throw new StateFileError(where, what, remedy) }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    bad(`not valid JSON (${(err as Error).message})`)
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) bad('not a JSON object')
  const obj = raw as Record<string, unknown>
  if (obj.version !== 1) bad(`unsupported version ${JSON.stringify(obj.version)} (expected 1)`)
  if (typeof obj.generation !== 'number' || !Number.isInteger(obj.generation) || obj.generation < 0) bad('generation must be a non-negative integer')
  if (obj.services === null || typeof obj.services !== 'object' || Array.isArray(obj.services)) bad('services must be an object')
  const services: Record<string, ServiceState> = {}
  for (const [name, v] of Object.entries(obj.services as Record<string, unknown>)) {
    const s = v as Record<string, unknown> | null
    if (s === null || typeof s !== 'object') bad(`services.${name} must be an object`)
    const st = s as Record<string, unknown>
    if (!isColor(st.live)) bad(`services.${name}.live must be blue or green`)
    if (st.previous !== null && st.previous !== undefined && !isColor(st.previous)) bad(`services.${name}.previous must be blue, green or null`)
    const targets: Partial<Record<Color, string[]>> = {}
    if (st.targets !== undefined) {
      if (st.targets === null || typeof st.targets !== 'object') bad(`services.${name}.targets must be an object`)
      for (const [color, list] of Object.entries(st.targets as Record<string, unknown>)) {
        if (!isColor(color)) bad(`services.${name}.targets.${color}: not a color`)
        if (!Array.isArray(list) || list.some((u) => 'error' in parseOrigin(u))) bad(`services.${name}.targets.${color} must be a list of URLs`)
        targets[color as Color] = list as string[]
      }
    }
    const state: ServiceState = { live: st.live as Color, previous: (st.previous ?? null) as Color | null, targets }
    if (st.split !== undefined) {
      const sp = (st.split ?? {}) as Record<string, unknown>
      const weight = sp.weight as number
      const seed = sp.seed as number
      if (typeof st.split !== 'object' || !isColor(sp.color) || sp.color === st.live || !Number.isInteger(weight) || weight < 1 || weight > 99 || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
        bad(`services.${name}.split must be {color (not the live one), weight 1..99, seed (a 32-bit unsigned integer)}`)
      }
      state.split = { color: sp.color as Color, weight, seed }
    }
    if (st.release !== undefined) {
      if (typeof st.release !== 'string' || st.release === '') bad(`services.${name}.release must be a release id`)
      state.release = st.release as string
    }
    if (st.shadow !== undefined) state.shadow = parseShadowOverride(st.shadow, () => bad(`services.${name}.shadow must be {off: true} or {sample (above 0, at most 1), until? (epoch ms)}`))
    services[name] = state
  }
  const lastChange = Array.isArray(obj.lastChange) ? obj.lastChange.filter((x): x is string => typeof x === 'string') : []
  const releases = parseStoredReleases(obj.releases, bad)
  const floor = obj.pinFloor
  if (floor !== undefined && (typeof floor !== 'number' || !Number.isInteger(floor) || floor < 0 || floor > (obj.generation as number))) bad('pinFloor must be an integer from 0 to the generation')
  return { generation: obj.generation as number, services, lastChange, ...(releases.length === 0 ? {} : { releases }), ...(floor === undefined || floor === 0 ? {} : { pinFloor: floor as number }) }
}
