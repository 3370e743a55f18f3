// The promise behind the event log's fsync: a real gateway process killed
// with SIGKILL right after each acknowledged flip loses none of them.

import t from 'tap'
import { admin, configFile, listening, serve, serviceYaml, startBackend } from './helpers/index.js'

const ROUNDS = 20

t.test('SIGKILL right after each acknowledged flip: every acknowledged change is in the log after a restart', async (t) => {
  const b = await startBackend(t, 'blue')
  const g = await startBackend(t, 'green')
  const file = configFile(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const acknowledged: number[] = []
  const start = async (): Promise<{ kill: () => Promise<void>, url: string }> => {
    const p = serve(t, ['serve', '--config', file])
    const { admin: port } = await listening(p)
    return { url: `http://127.0.0.1:${port}`, kill: async () => { p.kill('SIGKILL'); await p.exit } }
  }
  for (let round = 0; round < ROUNDS; round++) {
    const gw = await start()
    const res = await admin(gw.url, 'POST', '/v1/flip', { reason: `round ${round}` })
    if (res.status === 200) acknowledged.push(res.json.generation)
    await gw.kill()
  }
  const last = await start()
  const flips = (await admin(last.url, 'GET', '/v1/events?type=flip')).json.events
  const missing = acknowledged.filter((gen) => !flips.some((e: any) => e.generation === gen))
  t.comment(`${ROUNDS} rounds, ${acknowledged.length} acknowledged flips, ${missing.length} missing from the log after SIGKILL and restart`)
  t.equal(acknowledged.length, ROUNDS, 'every flip was acknowledged')
  t.same(missing, [], 'no acknowledged flip is missing from GET /v1/events')
  t.same(flips.map((e: any) => e.reason), acknowledged.map((_, i) => `round ${i}`), 'each once, in order')
  t.equal((await admin(last.url, 'GET', '/v1/state')).json.generation, ROUNDS, 'the state file agrees')
  await last.kill()
})
