// Child process: HAProxy as a reverse proxy in front of one upstream.
//   node haproxy.js --dir TEMPDIR --upstream 127.0.0.1:PORT [--haproxy /usr/sbin/haproxy]
// Writes haproxy.cfg into TEMPDIR: one thread (`nbthread 1`), no logs, one
// frontend on 127.0.0.1, keep-alive on both sides (`option http-keep-alive`,
// backend `http-reuse always`), and the same X-Forwarded-For/-Proto/-Host work
// as the other proxies. Runs it in the foreground (`-db`: no daemon, no
// master process) and reports { type: 'ready', url, version, pid }. This
// wrapper kills HAProxy when it is told to stop or when the parent goes away.

import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs, reportStartupError } from './children.js'
import { exitWithServer, startOnFreePort } from './external.js'

const args = parseArgs()
const dir = String(args.dir)
const bin = typeof args.haproxy === 'string' ? args.haproxy : 'haproxy'
let proc
let stderr = ''

const stderrTail = () => stderr.slice(-2000)
// HAProxy: SIGTERM = hard stop
exitWithServer({ server: () => proc, dir, log: stderrTail })

function config (port, upstream) {
  return `
global
  nbthread 1
  maxconn 4096
  pidfile ${join(dir, 'haproxy.pid')}

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 65s
  timeout server 65s
  timeout http-keep-alive 65s
  timeout http-request 65s

frontend fe
  bind 127.0.0.1:${port}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be

backend be
  http-reuse always
  server up ${upstream}
`
}

try {
  mkdirSync(dir, { recursive: true })
  const v = spawnSync(bin, ['-v'], { encoding: 'utf8' })
  const version = (/version (\S+)/.exec(v.stdout ?? '') ?? [])[1] ?? String(v.stdout ?? '').split('\n')[0]
  await startOnFreePort((port) => {
    const conf = join(dir, 'haproxy.cfg')
    writeFileSync(conf, config(port, String(args.upstream)))
    const check = spawnSync(bin, ['-c', '-f', conf], { encoding: 'utf8' })
    if (check.status !== 0) throw new Error(`haproxy -c failed: ${check.stdout}${check.stderr}`)
    stderr = ''
    proc = spawn(bin, ['-db', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
    proc.stderr.setEncoding('utf8')
    proc.stderr.on('data', (d) => { if (stderr.length < 100_000) stderr += d })
    proc.on('error', () => {})
    return proc
  }, { name: 'haproxy', log: stderrTail, version })
} catch (err) {
  reportStartupError(err)
}
