import t from 'tap'
import { newRequestId } from '../src/proxy/request-id.js'

t.test('request ids are UUID-shaped, share a random half per process and never repeat', async (t) => {
  const ids = Array.from({ length: 1000 }, () => newRequestId())
  for (const id of [ids[0], ids[999]]) t.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  t.equal(new Set(ids).size, 1000)
  t.equal(new Set(ids.map((id) => id.slice(0, 19))).size, 1, 'one random half')
  t.equal(parseInt(ids[999].slice(24), 16) - parseInt(ids[0].slice(24), 16), 999, 'then a counter')
})
