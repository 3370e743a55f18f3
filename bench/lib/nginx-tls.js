// Child process: nginx for the TLS bench (tls.js), one worker, in one of three roles:
//   node nginx-tls.js --dir TEMPDIR --role upstream [--body-bytes 100]
//       plain HTTP/1.1, `return 200` with a body of --body-bytes bytes ("x"), text/plain,
//       and `x-bench-upstream: nginx` (tls.js checks each proxy passes it on)
//   node nginx-tls.js --dir TEMPDIR --role proxy --upstream 127.0.0.1:PORT
//       plain HTTP/1.1 reverse proxy (the same proxy block as nginx.js)
//   node nginx-tls.js --dir TEMPDIR --role proxy --upstream 127.0.0.1:PORT --cert FILE --key FILE
//       [--cipher TLS_AES_256_GCM_SHA384] [--curve X25519]
//       the same proxy on one TLS listener speaking HTTP/1.1 and HTTP/2 (ALPN),
//       TLS 1.3 only, the one cipher suite and key-exchange group given
// Options: [--nginx /usr/sbin/nginx]. Writes its config into TEMPDIR, runs
// nginx in the foreground and reports { type: 'ready', url, version, pid }
// (url is http://127.0.0.1:PORT in every role: the parent picks the scheme).
// Like nginx.js, it kills nginx when told to stop or when the parent goes away.
//
// TLS settings are the ones the issue-14 probe used (notes/issue-14-probe.md),
// so every server in the bench does the same cryptographic work per request:
// TLS 1.3, one cipher suite (ssl_conf_command: nginx's ssl_ciphers only
// covers TLS 1.2 and older), one group, no session cache (keep-alive loads
// do one handshake per connection anyway). nginx 1.22 (Debian 12) turns
// HTTP/2 on with `listen ... http2`; `http2 on` is 1.25+. keepalive_requests
// also bounds the requests of an HTTP/2 connection since 1.19.7 (it replaced
// http2_max_requests, default 1000, which would reconnect h2load every 1000).

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs, reportStartupError } from './children.js'
import { exitWithServer, startOnFreePort } from './external.js'

const args = parseArgs()
const dir = String(args.dir)
const bin = typeof args.nginx === 'string' ? args.nginx : 'nginx'
const role = String(args.role ?? 'proxy')
const bodyBytes = Number(args['body-bytes'] ?? 100)
const tls = typeof args.cert === 'string' && typeof args.key === 'string'
  ? { cert: args.cert, key: args.key, cipher: String(args.cipher ?? 'TLS_AES_256_GCM_SHA384'), curve: String(args.curve ?? 'X25519') }
  : undefined
let proc

exitWithServer({ server: () => proc, dir, log: readLog })

function readLog () {
  const f = join(dir, 'logs', 'error.log')
  return existsSync(f) ? readFileSync(f, 'utf8').slice(-2000) : '(no error log)'
}

function head () {
  const tmp = (n) => join(dir, 'tmp', n)
  return `
worker_processes 1;
daemon off;
master_process on;
${process.getuid?.() === 0 ? 'user root root;' : ''}
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'logs', 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${tmp('client_body')};
  proxy_temp_path ${tmp('proxy')};
  fastcgi_temp_path ${tmp('fastcgi')};
  uwsgi_temp_path ${tmp('uwsgi')};
  scgi_temp_path ${tmp('scgi')};
  keepalive_timeout 65s;
  keepalive_requests 1000000;`
}

function upstreamConfig (port) {
  // `return 200 "..."` with a fixed body: no file, no buffering, the least nginx can do per request.
  return `${head()}
  default_type text/plain;
  server {
    listen 127.0.0.1:${port};
    location / {
      add_header x-bench-upstream nginx;
      return 200 "${'x'.repeat(bodyBytes)}";
    }
  }
}
`
}

function proxyConfig (port, upstream) {
  const listen = tls === undefined
    ? `listen 127.0.0.1:${port};`
    : `listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites ${tls.cipher};
    ssl_ecdh_curve ${tls.curve};
    ssl_session_cache off;`
  // The proxy block is nginx.js's: keep-alive to the upstream, the X-Forwarded-* Switchyard also sets.
  return `${head()}
  upstream backend {
${upstream.split(',').map((u) => `    server ${u};`).join('\n')}
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    ${listen}
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
  if (role !== 'upstream' && role !== 'proxy') throw new Error(`--role ${role}: upstream or proxy`)
  if (role === 'proxy' && typeof args.upstream !== 'string') throw new Error('--role proxy needs --upstream 127.0.0.1:PORT')
  if (!(Number.isInteger(bodyBytes) && bodyBytes >= 0 && bodyBytes <= 4000)) throw new Error(`--body-bytes ${args['body-bytes']}: 0..4000 (it goes into a return directive)`)
  mkdirSync(join(dir, 'logs'), { recursive: true })
  mkdirSync(join(dir, 'tmp'), { recursive: true })
  const v = spawnSync(bin, ['-v'], { encoding: 'utf8' }) // `nginx -v` prints to stderr
  const version = `${v.stderr ?? ''}${v.stdout ?? ''}`.trim().replace(/^nginx version: /, '')
  await startOnFreePort((port) => {
    const conf = join(dir, 'nginx.conf')
    writeFileSync(conf, role === 'upstream' ? upstreamConfig(port) : proxyConfig(port, String(args.upstream)))
    proc = spawn(bin, ['-p', dir, '-c', conf, '-e', join(dir, 'logs', 'error.log')], { stdio: ['ignore', 'ignore', 'inherit'] })
    proc.on('error', () => {})
    return proc
  }, { name: `nginx (${role}${tls === undefined ? '' : ', TLS'})`, log: readLog, version })
} catch (err) {
  reportStartupError(err)
}
