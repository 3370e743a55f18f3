// Shared by the wrappers that run an external server binary as a child of a
// forked bench child (nginx.js, haproxy.js, caddy.js): stopping the server,
// the wrapper's exit wiring (stop, log and parent-gone handling), a free port
// from the kernel and waiting until the server listens on it. Each wrapper
// keeps its own config, its start-up and its port-retry loop.

import { rmSync } from 'node:fs'
import net from 'node:net'
import { exitWithParent, stopProcess } from './children.js'

/** SIGTERM, then SIGKILL after 3 s; resolves when `proc` is gone (at once if there is none or it already exited). */
export async function killServer (proc) {
  if (proc === undefined) return
  await stopProcess(proc, 3000)
}

/**
 * Wires the wrapper's exit. When the parent goes away, on SIGTERM/SIGINT or on
 * { type: 'stop' }: kill the server, remove `dir` (the parent removes it too;
 * this covers a parent killed with SIGKILL) and exit. Answers { type: 'log' }
 * with { type: 'reply', id, log: log() }, the server's error output tail. If
 * this process exits anyway, the server gets SIGKILL. `server()` returns the
 * current server process (undefined before the first start).
 */
export function exitWithServer ({ server, dir, log }) {
  const go = exitWithParent(async () => {
    await killServer(server())
    rmSync(dir, { recursive: true, force: true })
  })
  process.on('message', (msg) => {
    if (msg?.type === 'stop') void go(0)
    else if (msg?.type === 'log') process.send({ type: 'reply', id: msg.id, log: log() })
  })
  process.on('exit', () => { try { server()?.kill('SIGKILL') } catch {} })
}

/** For servers that cannot listen on port 0: take a free port from the kernel, then hand it over. */
export async function freePort () {
  const srv = net.createServer()
  await new Promise((resolve, reject) => { srv.once('error', reject); srv.listen(0, '127.0.0.1', resolve) })
  const { port } = srv.address()
  await new Promise((resolve) => srv.close(resolve))
  return port
}

/**
 * Polls a connect to 127.0.0.1:`port` every 50 ms until `proc` listens there;
 * throws with `log()` (the server's error output tail) if `proc` exits first
 * or nothing listens within `ms`. `name` starts the error messages.
 */
export async function waitForPort (proc, port, ms, { name, log }) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode}: ${log()}`)
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`${name} did not listen on ${port}: ${log()}`)
}

/**
 * Starts a server on a free port from the kernel and waits until it listens,
 * three tries (the port may be taken in between: nginx, HAProxy and Caddy
 * cannot listen on port 0 and report it). `start(port)` writes the config and
 * spawns the server; its stderr or log is read through `log`. Reports
 * { type: 'ready', url, version, pid } to the parent and returns the process.
 */
export async function startOnFreePort (start, { name, log, version }) {
  let lastErr
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    const proc = start(port)
    try {
      await waitForPort(proc, port, 5000, { name, log })
      process.send({ type: 'ready', url: `http://127.0.0.1:${port}`, version, pid: proc.pid })
      return proc
    } catch (err) {
      lastErr = err
      await killServer(proc)
    }
  }
  throw lastErr
}
