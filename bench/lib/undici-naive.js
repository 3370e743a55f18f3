// Child process: the "naive undici Pool forwarder" baseline. http.createServer
// plus one undici Pool (keep-alive, 128 connections) to the target; each
// request is one pool.request() whose answer is piped back. No routing, no
// health, no metrics: what undici alone gives a Node proxy.
//   node undici-naive.js --target http://127.0.0.1:PORT
// Reports { type: 'ready', url }.

import http from 'node:http'
import { Pool } from 'undici'
import { parseArgs, serveAsChild } from './children.js'

const args = parseArgs()
const pool = new Pool(String(args.target), { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 })

// Hop-by-hop headers (RFC 9110 7.6.1); undici also refuses connection,
// keep-alive, transfer-encoding, upgrade and expect outright. It frames the
// body itself: content-length when the client sent one, else chunked.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect'])

/** `headers` without hop-by-hop ones (and those named in its Connection header). */
function strip (headers) {
  const named = headers.connection === undefined ? undefined : new Set(String(headers.connection).split(',').map((t) => t.trim().toLowerCase()))
  const out = {}
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || named?.has(name)) continue
    out[name] = headers[name]
  }
  return out
}

function fail (res, err) {
  if (!res.headersSent) {
    res.writeHead(502, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'upstream_error', message: err.message }))
  } else {
    res.destroy(err)
  }
}

async function forward (req, res) {
  const headers = strip(req.headers)
  // X-Forwarded-For/-Proto/-Host, like Switchyard, http-proxy-3 (xfwd) and the nginx config.
  const client = req.socket.remoteAddress ?? ''
  headers['x-forwarded-for'] = headers['x-forwarded-for'] === undefined ? client : `${headers['x-forwarded-for']}, ${client}`
  headers['x-forwarded-proto'] = 'http'
  if (req.headers.host !== undefined) headers['x-forwarded-host'] = req.headers.host
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  let up
  try {
    up = await pool.request({ path: req.url, method: req.method, headers, body: hasBody ? req : null })
  } catch (err) {
    fail(res, err)
    return
  }
  res.writeHead(up.statusCode, strip(up.headers))
  // .pipe(), not stream.pipeline(): pipeline makes an AbortController per call
  // and a DOMException per finished response, a visible share of the CPU here.
  up.body.on('error', (err) => res.destroy(err))
  res.on('close', () => { if (!up.body.destroyed) up.body.destroy() })
  up.body.pipe(res)
}

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => { forward(req, res).catch((err) => fail(res, err)) })

await serveAsChild(server, async () => await pool.destroy())
