// Prototype of an h2 front end over a raw-socket h1 upstream pool (the fast engine's upstream idea):
// node h2proxy.mjs PORT UPSTREAM_PORT. Each h2 stream: take an idle keep-alive socket (or open one),
// write the GET head, read the answer (content-length framing only), respond on the stream.
import http2 from 'node:http2'
import net from 'node:net'
import { readFileSync } from 'node:fs'
const [port, upPort] = process.argv.slice(2).map(Number)
const idle = []
const CRLF2 = Buffer.from('\r\n\r\n')
function conn () {
  const s = net.connect({ port: upPort, host: '127.0.0.1', noDelay: true })
  s.on('error', () => {})
  let buf; s.cb = undefined
  s.on('data', (chunk) => {
    buf = buf === undefined ? chunk : Buffer.concat([buf, chunk])
    const end = buf.indexOf(CRLF2)
    if (end === -1) return
    const head = buf.toString('latin1', 0, end)
    const len = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0)
    if (buf.length < end + 4 + len) return
    const body = buf.subarray(end + 4, end + 4 + len)
    const status = Number(head.slice(9, 12))
    const ctype = /content-type: *([^\r]+)/i.exec(head)?.[1]
    buf = undefined
    const cb = s.cb; s.cb = undefined
    idle.push(s)
    cb(status, ctype, body)
  })
  return s
}
const server = http2.createSecureServer({
  key: readFileSync('/tmp/h2probe/certs/ec.key'), cert: readFileSync('/tmp/h2probe/certs/ec.crt'),
  minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256', ecdhCurve: 'X25519',
})
server.on('stream', (stream, headers) => {
  const s = idle.pop() ?? conn()
  s.cb = (status, ctype, body) => {
    if (stream.destroyed) return
    stream.respond({ ':status': status, 'content-type': ctype, 'content-length': body.length })
    stream.end(body)
  }
  s.write(`${headers[':method']} ${headers[':path']} HTTP/1.1\r\nhost: ${headers[':authority']}\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: https\r\nx-forwarded-host: ${headers[':authority']}\r\n\r\n`, 'latin1')
})
server.on('sessionError', () => {})
server.listen(port, '127.0.0.1', () => console.log('ready'))
process.on('SIGTERM', () => process.exit(0))
