// Fault suite (g): the primary of `serve --workers 2` is SIGKILLed while
// requests are in flight on its workers. Those requests must complete, and the
// workers must then exit by themselves (a supervisor restarts the whole).

import t from 'tap'
import http from 'node:http'
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { configFile, eventually, isAlive, serviceYaml, startBackend } from '../helpers/index.js'
import { figures } from './lib.js'

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))
const INFLIGHT = 16

/** Processes whose parent is `pid` (Linux /proc). */
function childrenOf (pid: number): number[] {
  const out: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry))
    } catch {}
  }
  return out
}

/** A GET on its own connection, so the cluster may give it to either worker. */
async function fresh (url: string): Promise<{ status: number, error?: string }> {
  return await new Promise((resolve) => {
    http.get(url, { agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }))
      res.on('error', (err) => resolve({ status: 0, error: err.message }))
    }).on('error', (err) => resolve({ status: 0, error: err.message }))
  })
}

t.test('(g) primary killed in cluster mode: in-flight requests complete, workers exit', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const primary = spawn(process.execPath, [CLI, 'serve', '--config', file, '--workers', '2'], { stdio: ['ignore', 'pipe', 'inherit'] })
  let workers: number[] = []
  t.teardown(() => {
    primary.kill('SIGKILL')
    for (const pid of workers) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  let out = ''
  primary.stdout.on('data', (c) => { out += String(c) })
  const up = await eventually(() => {
    const line = out.split('\n').find((l) => l.includes('"switchyard listening"'))
    if (line === undefined) throw new Error('not listening yet')
    return JSON.parse(line)
  }, { timeout: 15_000 })
  const url = `http://${up.listen as string}`
  workers = childrenOf(primary.pid as number)
  t.equal(workers.length, 2, 'two workers')

  const inflight = Array.from({ length: INFLIGHT }, async () => await fresh(`${url}/slow?ms=1500`))
  await eventually(() => b.seen.filter((s) => s.url.startsWith('/slow')).length === INFLIGHT)
  const killedAt = Date.now()
  primary.kill('SIGKILL')
  const results = await Promise.all(inflight)
  const completed = results.filter((r) => r.status === 200).length
  let exitedMs: number | undefined
  await eventually(() => {
    if (workers.some(isAlive)) return false
    exitedMs = Date.now() - killedAt
    return true
  }, { timeout: 10_000 }).catch(() => {})
  figures('(g) primary killed, --workers 2', {
    inflightAtKill: INFLIGHT,
    completed,
    failed: INFLIGHT - completed,
    errors: [...new Set(results.flatMap((r) => r.error === undefined ? [] : [r.error]))],
    workersExitedAfter: exitedMs === undefined ? 'still running after 10 s' : `${exitedMs}ms`,
  })
  t.equal(completed, INFLIGHT, 'every in-flight request completed')
  t.not(exitedMs, undefined, 'the workers exited by themselves')
})
