// Diagnostics for the gateway child (switchyard.js --trace), installed from
// outside before dist/ is loaded, without touching src/:
//   - every FileHandle.sync() (fsync) with its duration,
//   - every Controller commit (build, persist, swap) and auto-revert, with start and end,
//   - every FileStateStore.save (the state file write inside a commit) and routing swap,
//   - every target pick (TargetSet.pick: which upstream a request, or its retry, goes to),
//   - event-loop lag: a 5 ms timer's lateness, sampled all run long.
// Times are performance.timeOrigin + performance.now() (ms since the epoch).
// install() must run before dist/ is imported; attach(Controller) after.

import { open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const now = () => performance.timeOrigin + performance.now()
const trace = { fsyncs: [], commits: [], saves: [], swaps: [], autoReverts: [], lag: [] }
/** url -> pick times (all of them: a few MB at most for a 10 s run). */
const picks = new Map()
const MAX = 10_000
const push = (list, x) => { if (list.length < MAX) list.push(x) }

export async function install () {
  // FileHandle is not exported: reach its prototype through a handle.
  const probe = join(tmpdir(), `switchyard-trace-${process.pid}`)
  const fh = await open(probe, 'w')
  const proto = Object.getPrototypeOf(fh)
  await fh.close()
  const { rm } = await import('node:fs/promises')
  await rm(probe, { force: true })
  const sync = proto.sync
  proto.sync = async function (...a) {
    const start = now()
    try { return await sync.apply(this, a) } finally { push(trace.fsyncs, { start, ms: now() - start }) }
  }

  const period = 5
  let expected = now() + period
  const timer = setInterval(() => {
    const t = now()
    push(trace.lag, [t, Math.max(0, t - expected)])
    expected = t + period
  }, period)
  timer.unref()
}

/**
 * Wraps the controller's commit and autoRevert (TypeScript-private, plain
 * methods at runtime), the state store's save and the switcher's swap.
 */
export function attach ({ Controller, FileStateStore, Switcher, TargetSet }) {
  // If one of them is gone (renamed in src/), nothing is wrapped: the trace stays empty.
  for (const [cls, name] of [[Controller, 'commit'], [Controller, 'autoRevert'], [FileStateStore, 'save'], [Switcher, 'swap'], [TargetSet, 'pick']]) {
    if (typeof cls?.prototype?.[name] !== 'function') {
      process.emitWarning(`trace-gateway: ${cls?.name ?? '?'}.${name} not found, not traced`)
      return
    }
  }
  const pick = TargetSet.prototype.pick
  TargetSet.prototype.pick = function (...a) {
    const e = pick.apply(this, a)
    if (e !== undefined) {
      let list = picks.get(e.target.url)
      if (list === undefined) picks.set(e.target.url, list = [])
      list.push(now())
    }
    return e
  }
  const save = FileStateStore.prototype.save
  FileStateStore.prototype.save = async function (state, ...rest) {
    const start = now()
    try { return await save.call(this, state, ...rest) } finally { push(trace.saves, { generation: state?.generation, start, ms: now() - start }) }
  }
  const swap = Switcher.prototype.swap
  Switcher.prototype.swap = function (next, ...rest) {
    push(trace.swaps, now())
    return swap.call(this, next, ...rest)
  }
  const commit = Controller.prototype.commit
  // Arguments are passed through as they are (commit may take more than these two).
  Controller.prototype.commit = function (next, event, ...rest) {
    const start = now()
    const done = () => push(trace.commits, { type: event?.type, generation: next?.generation, start, ms: now() - start })
    // Not an async wrapper: whatever commit does synchronously stays synchronous for its caller.
    const p = commit.call(this, next, event, ...rest)
    p.then(done, done)
    return p
  }
  const autoRevert = Controller.prototype.autoRevert
  Controller.prototype.autoRevert = async function (guard, trip, ...rest) {
    const start = now()
    try { return await autoRevert.call(this, guard, trip, ...rest) } finally { push(trace.autoReverts, { start, ms: now() - start, reason: trip?.reason, requests: trip?.requests, errors: trip?.errors }) }
  }
}

/** Everything, with picks summarized per upstream: total, last, and how many after `after`. */
export function snapshot (after) {
  const summary = {}
  for (const [url, list] of picks) {
    let n = 0
    if (after !== undefined) for (const t of list) if (t > after) n++
    summary[url] = { count: list.length, first: list[0] ?? null, last: list.at(-1) ?? null, ...(after === undefined ? {} : { after: n, afterTimes: list.filter((t) => t > after).slice(0, 50) }) }
  }
  return { ...trace, picks: summary }
}
