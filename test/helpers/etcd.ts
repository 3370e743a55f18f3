// A real etcd (Debian's etcd-server, etcd 3.4) for a test: its own free
// loopback ports and temp data dir, stopped (and the dir removed) at teardown.
// It can be stopped and started again on the same ports and data, or killed.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { closedPort } from './index.js'

interface Teardown {
  teardown: (fn: () => unknown) => void
}

export interface EtcdServer {
  /** The client URL, http://127.0.0.1:PORT. */
  endpoint: string
  dataDir: string
  /** Whether it is running now. */
  readonly running: boolean
  /** Starts it again (same ports, same data) and resolves once it answers. */
  start: () => Promise<void>
  /** SIGTERM, and resolves once it has exited. */
  stop: () => Promise<void>
  /** SIGKILL, and resolves once it has exited. */
  kill: () => Promise<void>
  /** What it printed, for a failing test's diagnostics. */
  log: () => string
}

/** Whether the etcd binary is installed (tests that need it skip with a reason when not). */
export const ETCD_BIN = process.env.ETCD_BIN ?? 'etcd'

/** Resolves once a TCP connection to the port succeeds, or rejects after `ms`. */
async function waitListening (port: number, ms: number, child: () => ChildProcess | undefined, log: () => string): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1')
      sock.once('connect', () => { sock.destroy(); resolve(true) })
      sock.once('error', () => resolve(false))
    })
    if (ok) return
    if (child() === undefined) throw new Error(`etcd exited before it listened:\n${log()}`)
    if (Date.now() > deadline) throw new Error(`etcd did not listen on ${port} within ${ms} ms:\n${log()}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

export async function startEtcd (t: Teardown, opts: { args?: string[] } = {}): Promise<EtcdServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sy-etcd-'))
  const clientPort = await closedPort()
  const peerPort = await closedPort()
  const endpoint = `http://127.0.0.1:${clientPort}`
  const peer = `http://127.0.0.1:${peerPort}`
  let child: ChildProcess | undefined
  let output = ''
  const log = (): string => output.slice(-4000)
  const args = [
    '--name', 'default',
    '--data-dir', join(dataDir, 'data'),
    '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `default=${peer}`,
    '--log-level', 'warn', '--logger', 'zap',
    ...(opts.args ?? []),
  ]
  const start = async (): Promise<void> => {
    if (child !== undefined) return
    const c = spawn(ETCD_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = c
    const keep = (b: Buffer): void => { output = (output + b.toString()).slice(-20_000) }
    c.stdout?.on('data', keep)
    c.stderr?.on('data', keep)
    c.once('exit', () => { if (child === c) child = undefined })
    c.once('error', (err) => { output += `\nspawn failed: ${err.message}`; if (child === c) child = undefined })
    await waitListening(clientPort, 15_000, () => child, log)
  }
  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    const c = child
    if (c === undefined) return
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()))
    c.kill(sig)
    await exited
    child = undefined
  }
  t.teardown(async () => {
    await signal('SIGKILL')
    rmSync(dataDir, { recursive: true, force: true })
  })
  await start()
  return {
    endpoint,
    dataDir,
    get running () { return child !== undefined },
    start,
    stop: async () => await signal('SIGTERM'),
    kill: async () => await signal('SIGKILL'),
    log,
  }
}
