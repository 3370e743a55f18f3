// Child process: Caddy as a reverse proxy in front of one upstream.
//   node caddy.js --dir TEMPDIR --upstream 127.0.0.1:PORT [--caddy /usr/bin/caddy]
// Writes a Caddyfile into TEMPDIR: admin endpoint off, automatic HTTPS off,
// HTTP/1.1 only, one site bound to 127.0.0.1, `reverse_proxy` to the upstream
// with keep-alive (Caddy's HTTP transport keeps connections alive; its idle
// pool is raised to 128 like nginx's `keepalive 128`). No `log` directive, so
// no access log; the default (runtime) logger goes to stderr at WARN.
// Caddy sets X-Forwarded-For/-Proto/-Host itself (no header_up needed), so it
// does the same header work as the other proxies. Caddy has no "one worker"
// setting: it runs with GOMAXPROCS=1 (one core's worth of Go scheduler, like
// nginx's one worker and HAProxy's `nbthread 1`). XDG_CONFIG_HOME and
// XDG_DATA_HOME point into TEMPDIR, so Caddy's autosave.json (2.6.2 has no
// `persist_config off` in the Caddyfile) and its data dir stay there.
// Runs `caddy run --config Caddyfile --adapter caddyfile` and reports
// { type: 'ready', url, version, pid }. This wrapper kills Caddy when it is
// told to stop or when the parent goes away.

import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs, reportStartupError } from './children.js'
import { exitWithServer, startOnFreePort } from './external.js'

const args = parseArgs()
const dir = String(args.dir)
const bin = typeof args.caddy === 'string' ? args.caddy : 'caddy'
let proc
let stderr = ''

const stderrTail = () => stderr.slice(-2000)
// Caddy: SIGTERM = graceful stop (grace_period 1s below)
exitWithServer({ server: () => proc, dir, log: stderrTail })

// `http://:PORT` + `bind 127.0.0.1`: a site address with a host
// (`http://127.0.0.1:PORT`) would still listen on every interface and add a
// Host matcher to every request; this listens on 127.0.0.1 only, unmatched,
// like the nginx and HAProxy configs.
function config (port, upstream) {
  return `{
	admin off
	auto_https off
	grace_period 1s
	log {
		level WARN
	}
	servers {
		protocols h1
	}
}

http://:${port} {
	bind 127.0.0.1
	reverse_proxy ${upstream} {
		transport http {
			keepalive 65s
			keepalive_idle_conns 128
			keepalive_idle_conns_per_host 128
		}
	}
}
`
}

try {
  mkdirSync(join(dir, 'xdg-config'), { recursive: true })
  mkdirSync(join(dir, 'xdg-data'), { recursive: true })
  const v = spawnSync(bin, ['version'], { encoding: 'utf8' })
  const version = String(v.stdout ?? '').trim().split(/\s/)[0] || String(v.stderr ?? '').trim().split('\n')[0]
  const env = { ...process.env, GOMAXPROCS: '1', XDG_CONFIG_HOME: join(dir, 'xdg-config'), XDG_DATA_HOME: join(dir, 'xdg-data') }
  await startOnFreePort((port) => {
    const conf = join(dir, 'Caddyfile')
    writeFileSync(conf, config(port, String(args.upstream)))
    stderr = ''
    proc = spawn(bin, ['run', '--config', conf, '--adapter', 'caddyfile'], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] })
    proc.stderr.setEncoding('utf8')
    proc.stderr.on('data', (d) => { if (stderr.length < 100_000) stderr += d })
    proc.on('error', () => {})
    return proc
  }, { name: 'caddy', log: stderrTail, version })
} catch (err) {
  reportStartupError(err)
}
