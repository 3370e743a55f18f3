// A release outlives its process: SIGKILL in `shifting`, a restart, and the release
// goes on at the same step with its hold timed from when the step began, not from the restart.

import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { admin, configFile, eventually, keyedLoad, listening, serve, startBackend, usersYaml } from './helpers/index.js'

t.test('SIGKILL in shifting, then a restart: the release resumes at the same step, timers from the stored start', async (t) => {
  const [v1, idle, v2] = await Promise.all(['v1', 'idle', 'v2'].map(async (n) => await startBackend(t, n)))
  // Probes that tolerate a loaded machine: three 80 ms timeouts in a row (the boot, four load loops) once reverted the release as "no healthy target".
  const file = configFile(t, usersYaml(v1, idle, '1s', '{ interval: 500ms, timeout: 500ms, healthyThreshold: 1 }'))
  const start = async (): Promise<{ url: string, pub: string, kill: () => Promise<void> }> => {
    const p = serve(t, ['serve', '--config', file])
    const { admin: port, port: pub } = await listening(p)
    return { url: `http://127.0.0.1:${port}`, pub: `http://127.0.0.1:${pub}`, kill: async () => { p.kill('SIGKILL'); await p.exit } }
  }
  const HOLD = 6_000
  const first = await start()
  const created = await admin(first.url, 'POST', '/v1/releases', { services: { users: { targets: [v2.url] } }, steps: [{ weight: 10, hold: `${HOLD}ms` }, { weight: 30, hold: '1s' }], verify: { window: '1s', minRequests: 20 } })
  t.equal(created.status, 201)
  const id = created.json.id as string
  const shifting = await eventually(async () => {
    const r = (await admin(first.url, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'shifting') throw new Error(String(r.phase))
    return r
  }, { timeout: 10_000, interval: 25 })
  const stepStarted = Date.parse(shifting.phaseStartedAt)
  await first.kill()
  // Down for a good part of the hold: a hold restarted at boot would end well after the stored one.
  await sleep(3_000)
  // A hold counted again from the restart could end no sooner than this (the boot comes after it).
  const restartedHoldEnd = Date.now() + HOLD
  const second = await start()
  // Traffic for the verdict: a step resumed with nothing to judge would wait for more rather than pass unjudged.
  // Green gets a tenth of it and needs 20 in a 1 s window: four loops keep that up on a loaded machine.
  const load = keyedLoad(t, () => `${second.pub}/x`, 4)
  const resumed = (await admin(second.url, 'GET', `/v1/releases/${id}`)).json
  t.equal(resumed.phase, 'shifting', 'still shifting after the restart')
  t.equal(resumed.step, 0, 'at the same step')
  t.equal(resumed.weight, 10)
  t.equal(resumed.phaseStartedAt, shifting.phaseStartedAt, 'the step keeps its start')
  const state = (await admin(second.url, 'GET', '/v1/state')).json
  t.same(state.services.users.weights, { blue: 90, green: 10 }, 'the weights are back in force')
  const next = await eventually(async () => {
    const r = (await admin(second.url, 'GET', `/v1/releases/${id}`)).json
    // On a timeout the message says why the step is still on: the verdict's outcome and reasons now.
    if (r.step !== 1) throw new Error(`step ${String(r.step)}, ${String(r.phase)} (${String(r.outcome)}), now ${JSON.stringify(r.current ?? null)}`)
    return r
  }, { timeout: 30_000, interval: 50 })
  await load.stop()
  const took = Date.parse(next.phaseStartedAt) - stepStarted
  // The verdict needs 20 requests in its window, so on a slow machine the step may end a little
  // past its hold; but always before a hold counted again from the restart could end.
  const ended = Date.parse(next.phaseStartedAt)
  t.ok(took >= HOLD && ended < restartedHoldEnd, `the first step ended ${took} ms after it began (hold ${HOLD} ms, 3 s of it down), ${restartedHoldEnd - ended} ms before a hold restarted at boot would`)
  await eventually(async () => {
    const r = (await admin(second.url, 'GET', `/v1/releases/${id}`)).json
    if (r.phase !== 'done') throw new Error(String(r.phase))
  }, { timeout: 30_000, interval: 50 })
  await second.kill()
})

t.test('the CLI follows a release and exits 0 when it is done, 3 when it is reverted', async (t) => {
  const [v1, idle, v2, bad] = await Promise.all(['v1', 'idle', 'v2', 'bad'].map(async (n) => await startBackend(t, n)))
  bad.handler = (req, res) => { res.writeHead(req.url === '/healthz' ? 200 : 500); res.end() }
  const file = configFile(t, usersYaml(v1, idle, '1s'))
  const gw = serve(t, ['serve', '--config', file])
  const { admin: port, port: pub } = await listening(gw)
  const adminUrl = `http://127.0.0.1:${port}`
  const cli = async (args: string[]): Promise<{ code: number | null, out: string }> => {
    const { spawn } = await import('node:child_process')
    const { fileURLToPath } = await import('node:url')
    const child = spawn(process.execPath, [fileURLToPath(new URL('../dist/cli.js', import.meta.url)), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SWITCHYARD_ADMIN_URL: adminUrl } })
    let out = ''
    child.stdout.on('data', (c) => { out += String(c) })
    child.stderr.on('data', (c) => { out += String(c) })
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    return { code, out }
  }
  const ok = await cli(['release', `users=${v2.url}`, '--verify', '1s', '--wait'])
  t.equal(ok.code, 0, ok.out)
  t.match(ok.out, /done/)
  // Traffic for the verdict: the bad release fails every request it gets.
  const load = keyedLoad(t, () => `http://127.0.0.1:${pub}/x`, 1)
  const reverted = await cli(['release', `users=${bad.url}`, '--steps', '50:30s', '--wait'])
  await load.stop()
  t.equal(reverted.code, 3, reverted.out)
  t.match(reverted.out, /reverted/)
})
