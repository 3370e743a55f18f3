// Child process: nginx as a reverse proxy in front of one upstream (or a
// comma-separated list, balanced round robin), or as the fast upstream itself.
//   node nginx.js --dir TEMPDIR --upstream 127.0.0.1:PORT[,127.0.0.1:PORT...] [--nginx /usr/sbin/nginx]
//   node nginx.js --dir TEMPDIR --role upstream [--large-path /64k --large-bytes 65536]
// The upstream role answers `return 200 "ok"` on every path (a POST's body is
// read and discarded), a small JSON object on /json (shadow.js compares it), and GET of --large-path with a static file of
// --large-bytes bytes (sendfile; a 64 KiB string is too long for `return`).
// Writes a config into TEMPDIR (prefix, pid, error log and temp paths all
// there; access_log off), runs nginx in the foreground (`daemon off`) with
// one worker, and reports { type: 'ready', url, version }. This wrapper kills
// nginx when it is told to stop or when the parent process goes away.

import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync, readFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs, reportStartupError } from './children.js'
import { exitWithServer, startOnFreePort } from './external.js'

const args = parseArgs()
const dir = String(args.dir)
const bin = typeof args.nginx === 'string' ? args.nginx : 'nginx'
const role = args.role === 'upstream' ? 'upstream' : 'proxy'
const largePath = typeof args['large-path'] === 'string' ? args['large-path'] : '/64k'
const largeBytes = Number(args['large-bytes'] ?? 65536)
let proc
/** What /json answers: a record of the size an API answers often (about 100 bytes). */
const JSON_BODY = '{"id":42,"name":"Ada Lovelace","plan":"pro","roles":["admin","billing"],"limits":{"projects":10,"seats":5}}'

// nginx: SIGTERM = fast shutdown. TEMPDIR is removed once nginx is gone.
// The 'log' reply is the error log's tail (warn and up): e.g. "an upstream
// response is buffered to a temporary file".
exitWithServer({ server: () => proc, dir, log: readLog })

function readLog () {
  const f = join(dir, 'logs', 'error.log')
  return existsSync(f) ? readFileSync(f, 'utf8').slice(-2000) : '(no error log)'
}

function config (port, upstream) {
  return role === 'upstream' ? upstreamConfig(port) : proxyConfig(port, upstream)
}

function head () {
  return `
worker_processes 1;
daemon off;
master_process on;
${process.getuid?.() === 0 ? 'user root root;' : ''}
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'logs', 'error.log')} warn;
events { worker_connections 4096; }
`
}

function tempPaths () {
  const tmp = (n) => join(dir, 'tmp', n)
  return `
  client_body_temp_path ${tmp('client_body')};
  proxy_temp_path ${tmp('proxy')};
  fastcgi_temp_path ${tmp('fastcgi')};
  uwsgi_temp_path ${tmp('uwsgi')};
  scgi_temp_path ${tmp('scgi')};
`
}

function upstreamConfig (port) {
  const file = join(dir, 'www', 'large.bin')
  return `${head()}
http {
  access_log off;${tempPaths()}
  default_type text/plain;
  sendfile on;
  open_file_cache max=16 inactive=60s;
  open_file_cache_valid 60s;
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${port};
    location = ${largePath} {
      default_type application/octet-stream;
      alias ${file};
    }
    location = /json {
      default_type application/json;
      return 200 '${JSON_BODY}';
    }
    location / {
      return 200 "ok";
    }
  }
}
`
}

function proxyConfig (port, upstream) {
  return `${head()}
http {
  access_log off;${tempPaths()}
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  upstream backend {
${upstream.split(',').map((u) => `    server ${u};`).join('\n')}
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
    }
  }
}
`
}

try {
  mkdirSync(join(dir, 'logs'), { recursive: true })
  mkdirSync(join(dir, 'tmp'), { recursive: true })
  if (role === 'upstream') {
    mkdirSync(join(dir, 'www'), { recursive: true })
    writeFileSync(join(dir, 'www', 'large.bin'), Buffer.alloc(largeBytes, 'x'))
  }
  // `nginx -v` prints to stderr.
  const v = spawnSync(bin, ['-v'], { encoding: 'utf8' })
  const version = `${v.stderr ?? ''}${v.stdout ?? ''}`.trim().replace(/^nginx version: /, '')
  await startOnFreePort((port) => {
    const conf = join(dir, 'nginx.conf')
    writeFileSync(conf, config(port, String(args.upstream)))
    proc = spawn(bin, ['-p', dir, '-c', conf, '-e', join(dir, 'logs', 'error.log')], { stdio: ['ignore', 'ignore', 'inherit'] })
    proc.on('error', () => {})
    return proc
  }, { name: 'nginx', log: readLog, version })
} catch (err) {
  reportStartupError(err)
}
