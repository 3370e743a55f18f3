// CPU time of a process tree from /proc (Linux only; returns null elsewhere).

import { readFileSync, readdirSync } from 'node:fs'

const TICKS = 100 // USER_HZ; 100 on every mainstream Linux build

function childrenOf (pid) {
  const out = []
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim()
      if (text !== '') out.push(...text.split(/\s+/).map(Number))
    }
  } catch {}
  return out
}

function cpuOf (pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / TICKS // utime + stime
}

/** Seconds of CPU used so far by `pid` and its descendants, or null. */
export function treeCpuSeconds (pid) {
  if (pid === undefined || process.platform !== 'linux') return null
  try {
    let total = 0
    const stack = [pid]
    while (stack.length > 0) {
      const p = stack.pop()
      try { total += cpuOf(p) } catch {}
      stack.push(...childrenOf(p))
    }
    return total
  } catch {
    return null
  }
}

/** `pid` and all its descendants (Linux; [pid] elsewhere). */
export function treePids (pid) {
  const out = []
  const stack = [pid]
  while (stack.length > 0) {
    const p = stack.pop()
    out.push(p)
    if (process.platform === 'linux') stack.push(...childrenOf(p))
  }
  return out
}

/** Busy CPU seconds of the whole machine so far (all cores), from /proc/stat; null elsewhere. */
export function machineBusySeconds () {
  if (process.platform !== 'linux') return null
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] // "cpu  user nice system idle iowait irq softirq steal ..."
    const f = line.trim().split(/\s+/).slice(1).map(Number)
    const idle = f[3] + (f[4] ?? 0)
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
    return (total - idle) / TICKS
  } catch {
    return null
  }
}

/**
 * CPU seconds of this process's children that have exited and been reaped
 * (cutime + cstime of /proc/self/stat), or null: how run.js measures wrk,
 * whose own /proc entry is gone once it has finished.
 */
export function reapedChildrenCpuSeconds () {
  if (process.platform !== 'linux') return null
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[13]) + Number(fields[14])) / TICKS
  } catch {
    return null
  }
}

/**
 * User and system CPU seconds of one process, all threads and its main
 * thread alone (/proc/PID/stat and /proc/PID/task/PID/stat), or null.
 */
export function cpuSplit (pid) {
  if (pid === undefined || process.platform !== 'linux') return null
  const read = (path) => {
    const stat = readFileSync(path, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { user: Number(f[11]) / TICKS, system: Number(f[12]) / TICKS }
  }
  try {
    return { all: read(`/proc/${pid}/stat`), main: read(`/proc/${pid}/task/${pid}/stat`) }
  } catch {
    return null
  }
}
