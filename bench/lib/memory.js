// Resident memory of a process (tree) from /proc/PID/status (Linux only).

import { readFileSync } from 'node:fs'
import { treePids } from './cpu.js'

/** VmRSS of `pid` in KiB, or null (gone, or not Linux). */
export function rssKiB (pid) {
  if (pid === undefined || process.platform !== 'linux') return null
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : null
  } catch {
    return null
  }
}

/**
 * Sum of VmRSS over `pid` and its descendants, in KiB (nginx: wrapper +
 * master + worker). Pages shared between them count once per process.
 */
export function treeRssKiB (pid) {
  if (pid === undefined || process.platform !== 'linux') return null
  let total = 0
  let any = false
  for (const p of treePids(pid)) {
    const r = rssKiB(p)
    if (r !== null) { total += r; any = true }
  }
  return any ? total : null
}

export const mib = (kib) => (kib === null || kib === undefined ? null : Math.round(kib / 1024 * 10) / 10)
