// A target in its own process, so a chaos scenario can SIGKILL it for real.
//   node test/chaos/target.js NAME   -> prints {"port":N} on stdout, then serves
// Every request gets 200 {"backend":NAME,"path":...} once its body is read;
// `/slow?ms=N` answers after N ms. Exits when its stdin closes (the test died).

import http from 'node:http'

const name = process.argv[2] ?? 'target'
const server = http.createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    const url = new URL(req.url ?? '/', 'http://x')
    const answer = () => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ backend: name, path: req.url }))
    }
    if (url.pathname.endsWith('/slow')) {
      const timer = setTimeout(answer, Number(url.searchParams.get('ms') ?? 1000))
      res.on('close', () => clearTimeout(timer))
    } else answer()
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n')
})
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
