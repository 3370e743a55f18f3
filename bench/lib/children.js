// Child-process and temp-dir bookkeeping shared by the bench scripts.
//
// Every server under test runs in its own forked Node process (IPC channel
// open), so the load generator in the parent never shares a core or an event
// loop with it. Children exit on their own when the IPC channel closes, i.e.
// when the parent dies for any reason, even SIGKILL. The parent also kills
// them and removes its temp dirs on normal exit, on error and on signals.

import { fork, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const children = new Set()
const tempDirs = new Set()
let hooked = false

function cleanupSync () {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try { child.kill('SIGTERM') } catch {}
    }
  }
  children.clear()
  for (const dir of tempDirs) {
    try { rmSync(dir, { recursive: true, force: true }) } catch {}
  }
  tempDirs.clear()
}

function hook () {
  if (hooked) return
  hooked = true
  process.on('exit', cleanupSync)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      cleanupSync()
      process.exit(sig === 'SIGINT' ? 130 : 143)
    })
  }
  process.on('uncaughtException', (err) => {
    console.error(err)
    cleanupSync()
    process.exit(1)
  })
  process.on('unhandledRejection', (err) => {
    console.error(err)
    cleanupSync()
    process.exit(1)
  })
}

/** A fresh temp dir, removed when this process exits. */
export function makeTempDir (prefix = 'switchyard-bench-') {
  hook()
  const dir = mkdtempSync(join(tmpdir(), prefix))
  tempDirs.add(dir)
  return dir
}

export function removeTempDir (dir) {
  rmSync(dir, { recursive: true, force: true })
  tempDirs.delete(dir)
}

/**
 * Forks `script` with an IPC channel and waits for its first message, which
 * must be `{ type: 'ready', ... }` (or `{ type: 'error', message }`).
 * Returns { child, info, request(msg), stop() }.
 */
export async function startChild (script, args = [], { timeoutMs = 15_000, name = script, execArgv } = {}) {
  hook()
  // execArgv: Node flags for the child (e.g. --cpu-prof); the default inherits this process's.
  const child = fork(script, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...(execArgv !== undefined ? { execArgv } : {}) })
  trackProcess(child)

  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`${name}: not ready after ${timeoutMs} ms`)), timeoutMs)
    function fail (err) {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
      reject(err)
    }
    function onMessage (msg) {
      if (msg?.type === 'ready') {
        clearTimeout(timer)
        child.off('message', onMessage)
        child.off('exit', onExit)
        resolve(msg)
      } else if (msg?.type === 'error') {
        fail(new Error(`${name}: ${msg.message}`))
      }
    }
    function onExit (code, signal) {
      fail(new Error(`${name}: exited before it was ready (code ${code}, signal ${signal})`))
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  }).catch(async (err) => {
    await stopProcess(child)
    throw err
  })

  let seq = 0
  /** Sends `{ ...msg, id }` and resolves with the child's `{ type: 'reply', id, ... }`. */
  function request (msg, timeoutMs = 10_000) {
    const id = ++seq
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { child.off('message', onMessage); reject(new Error(`${name}: no reply to ${msg.type}`)) }, timeoutMs)
      function onMessage (m) {
        if (m?.type === 'reply' && m.id === id) {
          clearTimeout(timer)
          child.off('message', onMessage)
          resolve(m)
        }
      }
      child.on('message', onMessage)
      child.send({ ...msg, id })
    })
  }

  return { child, info, request, stop: async () => await stopProcess(child) }
}

/**
 * Registers a process this script spawned itself (say, wrk) so it is killed
 * on every exit path, like the forked children.
 */
export function trackProcess (child) {
  hook()
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stopProcess (child, graceMs = 5_000) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  try { child.kill('SIGTERM') } catch {}
  const timer = setTimeout(() => { try { child.kill('SIGKILL') } catch {} }, graceMs)
  await exited
  clearTimeout(timer)
}

/**
 * For child scripts: exit (after `cleanup`) when the parent goes away or
 * sends SIGTERM/SIGINT.
 */
export function exitWithParent (cleanup = async () => {}) {
  let exiting = false
  const go = async (code) => {
    if (exiting) return
    exiting = true
    try { await cleanup() } catch (err) { console.error(err) }
    process.exit(code)
  }
  process.on('disconnect', () => { void go(0) })
  process.on('SIGTERM', () => { void go(0) })
  process.on('SIGINT', () => { void go(0) })
  return go
}

/**
 * For child scripts that are one HTTP server: listen on 127.0.0.1 port 0,
 * report { type: 'ready', url }, and on 'stop' or the parent's exit close
 * every connection, then run `cleanup` (pools, agents).
 */
export async function serveAsChild (server, cleanup = async () => {}) {
  const go = exitWithParent(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(() => resolve()))
    await cleanup()
  })
  process.on('message', (msg) => { if (msg?.type === 'stop') void go(0) })
  try {
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve() })
    })
    process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}` })
  } catch (err) {
    reportStartupError(err)
  }
}

/** For child scripts: report a start-up failure to the parent and exit. */
export function reportStartupError (err) {
  try { process.send?.({ type: 'error', message: err?.stack ?? String(err) }) } catch {}
  process.exitCode = 1
  setTimeout(() => process.exit(1), 100).unref()
}

/** Parses `--name value` / `--flag` arguments. */
export function parseArgs (argv = process.argv.slice(2)) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) continue
    const eq = a.indexOf('=')
    if (eq !== -1) { out[a.slice(2, eq)] = a.slice(eq + 1); continue }
    const next = argv[i + 1]
    if (next === undefined || next.startsWith('--')) out[a.slice(2)] = true
    else { out[a.slice(2)] = next; i++ }
  }
  return out
}

/**
 * Exits 2, naming what to install, unless every one of `bins` (nginx, wrk,
 * h2load, ...) runs here. Each is asked for its version the way it answers.
 */
export function requireTools (bins) {
  const versionArgs = { nginx: ['-v'], h2load: ['--version'], haproxy: ['-v'], caddy: ['version'] }
  const missing = bins.filter((bin) => spawnSync(bin, versionArgs[bin] ?? ['--version'], { stdio: 'ignore' }).error !== undefined)
  if (missing.length === 0) return
  const packages = missing.map((bin) => bin === 'h2load' ? 'nghttp2-client' : bin)
  console.error(`missing: ${missing.join(', ')} (Debian: apt-get install -y ${packages.join(' ')})`)
  process.exit(2)
}
