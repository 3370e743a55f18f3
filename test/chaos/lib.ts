// Shared parts of the fault suite: the gateway as a real `node dist/cli.js serve`
// process, targets in their own processes, a paced keep-alive load generator that
// records every request, and one line of figures per scenario.

import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import { admin, CLI_TOP, listening, serve, tempDir, type Proc } from '../helpers/index.js'

interface Teardown { teardown: (fn: () => unknown) => void }

export const ENGINES = ['fast', 'node'] as const

export interface Cli {
  url: string
  port: number
  adminUrl: string
  dir: string
  file: string
  proc: Proc
}

/** Writes `yaml` (listeners on port 0, no access log) to a temp folder and runs the CLI on it. */
export async function startCli (t: Teardown, yaml: string, opts: { dir?: string, args?: string[] } = {}): Promise<Cli> {
  const dir = opts.dir ?? tempDir(t)
  const file = join(dir, 'switchyard.yaml')
  writeFileSync(file, `${CLI_TOP}${yaml}`)
  const proc = serve(t, ['serve', '--config', file, ...(opts.args ?? [])])
  const { port, admin: adminPort } = await listening(proc)
  return { url: `http://127.0.0.1:${port}`, port, adminUrl: `http://127.0.0.1:${adminPort}`, dir, file, proc }
}

export interface Target {
  name: string
  url: string
  kill: (sig: NodeJS.Signals) => void
  exited: Promise<unknown>
}

const TARGET = fileURLToPath(new URL('./target.js', import.meta.url))

/** A target in its own process (test/chaos/target.js), answering 200 {backend: name}. */
export async function startTarget (t: Teardown, name: string): Promise<Target> {
  const child = spawn(process.execPath, [TARGET, name], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const port = await new Promise<number>((resolve, reject) => {
    let buf = ''
    child.stdout.on('data', (c) => {
      buf += String(c)
      if (buf.includes('\n')) resolve(JSON.parse(buf).port)
    })
    child.once('exit', (code) => reject(new Error(`target ${name} exited (${String(code)}) before listening`)))
  })
  return { name, url: `http://127.0.0.1:${port}`, kill: (sig) => child.kill(sig), exited }
}

export interface Sample {
  /** Date.now() when the request was sent and when it ended (answer read whole, or failed). */
  start: number
  end: number
  status: number
  /** `backend` of the JSON answer, when there was one. */
  backend?: string
  error?: string
}

export interface Load {
  samples: Sample[]
  /** Resolves when every worker stopped (duration or count reached, or stop() called). */
  done: Promise<Sample[]>
  stop: () => void
}

/**
 * Paced keep-alive load: `connections` workers, each sending its next request
 * when the last one ended and at most `rps / connections` per second, for
 * `durationMs` or `maxRequests` in all, whichever comes first.
 */
export function startLoad (url: string, { path = '/', rps = 300, connections = 8, durationMs = 3000, maxRequests = 5000, headers = {} } = {}): Load {
  const pool = new Pool(url, { connections, pipelining: 1, headersTimeout: 10_000, bodyTimeout: 10_000 })
  const samples: Sample[] = []
  const gap = connections * 1000 / rps
  const until = Date.now() + durationMs
  let stopped = false
  const worker = async (): Promise<void> => {
    while (!stopped && Date.now() < until && samples.length < maxRequests) {
      const start = Date.now()
      const sample: Sample = { start, end: start, status: 0 }
      samples.push(sample)
      try {
        const res = await pool.request({ path, method: 'GET', headers })
        const text = await res.body.text()
        sample.status = res.statusCode
        try { sample.backend = JSON.parse(text).backend } catch {}
      } catch (err) {
        sample.error = (err as { code?: string }).code ?? (err as Error).message
      }
      sample.end = Date.now()
      const wait = start + gap - Date.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    }
  }
  const done = Promise.all(Array.from({ length: connections }, worker)).then(async () => {
    await pool.close().catch(() => {})
    return samples
  })
  return { samples, done, stop: () => { stopped = true } }
}

export const isOk = (s: Sample): boolean => s.status >= 200 && s.status < 400

/** One line of figures on stderr (tap passes it through as it is). */
export function figures (scenario: string, values: Record<string, unknown>): void {
  const parts = Object.entries(values).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v as string | number | boolean | undefined)}`)
  process.stderr.write(`[chaos] ${scenario}: ${parts.join(' ')}\n`)
}

/** Events of the given types (GET /v1/events?type=...). */
export async function events (adminUrl: string, types: string): Promise<any[]> {
  const res = await admin(adminUrl, 'GET', `/v1/events?type=${types}`)
  if (res.status !== 200) throw new Error(`GET /v1/events: ${res.status} ${res.text}`)
  return res.json.events
}

export async function state (adminUrl: string): Promise<any> {
  const res = await admin(adminUrl, 'GET', '/v1/state')
  if (res.status !== 200) throw new Error(`GET /v1/state: ${res.status} ${res.text}`)
  return res.json
}

/** Counts by status (or error code) for the figures. */
export function tally (samples: Sample[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const s of samples) {
    const k = s.error ?? String(s.status)
    out[k] = (out[k] ?? 0) + 1
  }
  return out
}
