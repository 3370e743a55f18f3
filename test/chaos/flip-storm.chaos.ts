// Fault suite (d): a storm of 200 flips and rollbacks while load runs. No client
// request may fail, every answer must come from a color that was live at some
// moment during that request, and the generation must count every change.

import t from 'tap'
import { admin } from '../helpers/index.js'
import { events, figures, isOk, startCli, startLoad, startTarget, state, type Sample } from './lib.js'

const CHANGES = 200
/**
 * One change every PACE ms at most (~8 s in all): a change takes a few ms (the
 * state file is fsynced), and requests that fall between two changes are the
 * ones for which only one color is right.
 */
const PACE = 40

/** Live colors over time as the client saw the admin calls: between a call's send and its answer, either. */
interface Segment { from: number, to: number, colors: string[] }

function liveAt (segments: Segment[], s: Sample): Set<string> {
  const out = new Set<string>()
  for (const seg of segments) {
    if (seg.from <= s.end && seg.to >= s.start) for (const c of seg.colors) out.add(c)
  }
  return out
}

t.test('(d) flip storm: 200 flips and rollbacks under load', async (t) => {
  const blue = await startTarget(t, 'blue')
  const green = await startTarget(t, 'green')
  const gw = await startCli(t, `services:
  svc:
    match: { pathPrefix: / }
    blue: { targets: [${blue.url}] }
    green: { targets: [${green.url}] }
`)
  const before = (await state(gw.adminUrl)).generation
  const load = startLoad(gw.url, { rps: 300, connections: 8, durationMs: 30_000, maxRequests: 10_000 })
  const segments: Segment[] = []
  let live = 'blue'
  let last = Date.now() - 60_000
  const refused: string[] = []
  const took: number[] = []
  const started = Date.now()
  for (let i = 0; i < CHANGES && Date.now() - started < 25_000; i++) {
    const wait = started + i * PACE - Date.now()
    // Paced from the start, so a slow change is not followed by a burst.
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    const sent = Date.now()
    // Alternate: a flip, then a rollback of it (also a change, with its own generation).
    const res = i % 2 === 0
      ? await admin(gw.adminUrl, 'POST', '/v1/flip', { guard: false, reason: `storm ${i}` })
      : await admin(gw.adminUrl, 'POST', '/v1/rollback', { reason: `storm ${i}` })
    const acked = Date.now()
    took.push(acked - sent)
    if (res.status !== 200) {
      refused.push(`${i}: ${res.status} ${res.text}`)
      continue
    }
    const next = live === 'blue' ? 'green' : 'blue'
    segments.push({ from: last, to: sent, colors: [live] }, { from: sent, to: acked, colors: [live, next] })
    live = next
    last = acked
  }
  segments.push({ from: last, to: Date.now() + 60_000, colors: [live] })
  const stormMs = Date.now() - started
  load.stop()
  const samples = await load.done
  const failed = samples.filter((s) => !isOk(s))
  const wrong = samples.filter((s) => isOk(s) && !liveAt(segments, s).has(s.backend ?? '?'))
  // Requests that overlapped no change: for these only one color was acceptable.
  const decisive = samples.filter((s) => liveAt(segments, s).size === 1).length
  const after = await state(gw.adminUrl)
  const changes = (await events(gw.adminUrl, 'flip,rollback')).filter((e) => e.generation > before)
  figures('(d) flip storm', {
    changes: CHANGES - refused.length,
    stormMs,
    sent: samples.length,
    ok: samples.length - failed.length,
    failed: failed.length,
    wrongColor: wrong.length,
    decisive,
    changeMs: { avg: Math.round(took.reduce((a, x) => a + x, 0) / Math.max(1, took.length)), max: Math.max(...took) },
    servedBy: { blue: samples.filter((s) => s.backend === 'blue').length, green: samples.filter((s) => s.backend === 'green').length },
    generation: `${before} -> ${after.generation as number}`,
  })
  t.same(refused, [], 'every flip and rollback was taken')
  t.ok(samples.length > 500, `load ran (${samples.length} requests)`)
  t.equal(failed.length, 0, 'no client request failed')
  t.same(wrong.slice(0, 5), [], 'every answer came from a color live at some moment during its request')
  t.ok(decisive > samples.length / 4, `the color check had teeth: ${decisive} requests overlapped no change`)
  t.equal(after.generation, before + CHANGES, 'one generation per change')
  t.equal(changes.length, CHANGES, 'one event per change')
  t.same(changes.map((e) => e.generation), Array.from({ length: CHANGES }, (_, i) => before + i + 1), 'events carry consecutive generations')
  t.equal(after.services.svc.live, live, 'the live color is the last acknowledged one')
})
