// The dashboard's Releases panel in a real Chromium: a real gateway serves the page and /v1/state,
// and /v1/releases is answered by a fake in the DESIGN-13 shapes (the one thing to swap for the real API).

import t, { type Test } from 'tap'
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Page, type Route } from 'playwright-core'
import { serviceYaml, startBackend, startGateway, type TestGateway } from './helpers/index.js'

const CHROMIUM = '/usr/bin/chromium'
const NO_BROWSER = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (.ci/run installs it with apt-get)`
const TOKEN = 's3cret'

async function gateway (t: Test): Promise<TestGateway> {
  const [ub, ug, ob, og] = await Promise.all(['users-blue', 'users-green', 'orders-blue', 'orders-green'].map(async (n) => await startBackend(t, n)))
  return await startGateway(t, `admin: { token: ${TOKEN} }\nservices:\n${serviceYaml('users', '/api/users', [ub], [ug])}\n${serviceYaml('orders', '/api/orders', [ob], [og])}`)
}

interface Call { method: string, path: string, authorization: string | undefined }

/** Answers /v1/releases and its actions from `fake.list`, as the admin API would, token included. */
interface FakeReleases { list: Array<Record<string, any>> | null, calls: Call[], actions: Map<string, (r: Record<string, any>) => void> }

async function openPage (t: Test, url: string, fake: FakeReleases): Promise<{ page: Page, errors: string[] }> {
  const profile = mkdtempSync(join(tmpdir(), 'switchyard-chromium-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
  })
  t.teardown(async () => {
    await context.close()
    rmSync(profile, { recursive: true, force: true })
  })
  const page = context.pages()[0] ?? await context.newPage()
  page.setDefaultTimeout(5000)
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (msg) => { if (msg.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) errors.push(msg.text()) })
  await page.route(/\/v1\/releases(\/|$|\?)/, async (route: Route) => {
    const req = route.request()
    const path = new URL(req.url()).pathname
    const authorization = req.headers().authorization
    fake.calls.push({ method: req.method(), path, authorization })
    if (authorization !== `Bearer ${TOKEN}`) return await route.fulfill({ status: 401, json: { error: 'unauthorized', message: 'missing or wrong bearer token' } })
    if (fake.list === null) return await route.fulfill({ status: 404, json: { error: 'not_found', message: `no admin endpoint ${req.method()} ${path}` } })
    if (req.method() === 'GET' && path === '/v1/releases') return await route.fulfill({ json: { releases: fake.list } })
    const m = /^\/v1\/releases\/([^/]+)\/(pause|resume|promote|abort)$/.exec(path)
    const r = m === null ? undefined : fake.list.find((x) => x.id === m[1])
    const apply = m === null ? undefined : fake.actions.get(m[2])
    if (req.method() !== 'POST' || r === undefined || apply === undefined) return await route.fulfill({ status: 409, json: { error: 'release_state', message: 'not allowed now' } })
    apply(r)
    await route.fulfill({ json: r })
  })
  // The release events the admin API would log, once (the page asks with ?since= after that).
  await page.route(/\/v1\/events(\?|$)/, async (route: Route) => {
    const first = !route.request().url().includes('since=')
    await route.fulfill({ json: { events: first ? RELEASE_EVENTS : [] } })
  })
  await page.goto(url)
  return { page, errors }
}

async function screenshot (page: Page, gw: TestGateway, name: string): Promise<string> {
  const file = join(gw.dir, name)
  await page.screenshot({ path: file, fullPage: true })
  const keep = process.env.SWITCHYARD_UI_SCREENSHOTS
  if (keep !== undefined && keep !== '') copyFileSync(file, join(keep, name))
  return file
}

async function clickConfirm (page: Page, selector: string): Promise<string> {
  const asked = page.waitForEvent('dialog').then(async (dialog) => {
    const question = dialog.message()
    await dialog.accept()
    return question
  })
  await page.click(selector)
  return await asked
}

const now = Date.now()
const at = (s: number): string => new Date(now + s * 1000).toISOString()

function side (rate: number, p50: number): Record<string, any> {
  return { errors: { requests: 1000, errors: Math.round(rate * 1000), rate }, latency: { samples: 1000, p50Ms: p50, p99Ms: p50 * 4 } }
}

function serviceVerdict (outcome: string, n: Record<string, any>, o: Record<string, any>, reasons: string[]): Record<string, any> {
  return {
    outcome,
    reasons,
    errors: { new: n.errors, old: o.errors, margin: 0.01, z: 0, p: 0.5, outcome },
    latency: { new: n.latency, old: o.latency, margin: 0.2, u: 0, z: 0, p: 0.5, outcome },
  }
}

const XSS = '<b id="xss">p99 up</b>'
const RELEASE_EVENTS = [
  { id: 1, type: 'release', time: at(-40), actor: 'cli:alice', reason: 'release 2026.11', release: 'r42', phase: 'shifting', step: 0, weight: 10 },
  { id: 2, type: 'release', time: at(-30), actor: 'switchyard', reason: null, release: 'r40', phase: 'reverted', outcome: XSS },
]

function release (id: string, phase: string, extra: Record<string, any> = {}): Record<string, any> {
  return {
    id,
    phase,
    services: {
      users: { targets: ['http://10.0.1.7:8080'], version: '1.1.0', from: 'blue', to: 'green' },
      orders: { targets: ['http://10.0.2.7:8080'], version: '2.4.0', from: 'green', to: 'blue' },
    },
    steps: [{ weight: 10, hold: 30_000 }, { weight: 50, hold: 30_000 }],
    step: -1,
    weight: 0,
    verify: { window: 60_000, maxErrorRateIncrease: 0.01, maxLatencyIncrease: 0.2, minRequests: 100 },
    timeout: 300_000,
    reason: 'release 2026.11',
    actor: 'cli:alice',
    seed: 1,
    startedAt: at(-60),
    updatedAt: at(-1),
    phaseStartedAt: at(-1),
    pausedAt: null,
    outcome: null,
    verdicts: [],
    history: [{ phase: 'deploying', at: at(-60) }],
    ...extra,
  }
}

function running (): Record<string, any> {
  return release('r42', 'shifting', {
    step: 0,
    weight: 10,
    history: [{ phase: 'deploying', at: at(-60) }, { phase: 'warming', at: at(-59) }, { phase: 'testing', at: at(-50) }, { phase: 'shifting', at: at(-40), step: 0, weight: 10 }],
    verdicts: [{
      at: at(-2),
      phase: 'shifting',
      step: 0,
      weight: 10,
      final: false,
      pass: false,
      services: {
        users: serviceVerdict('pass', side(0.001, 21), side(0.002, 20), []),
        orders: serviceVerdict('fail', side(0.004, 60), side(0.003, 20), [XSS]),
      },
    }],
  })
}

function tableRows (page: Page, release: string): Promise<string[][]> {
  return page.$$eval(`[data-release="${release}"] .rel-services tbody tr`, (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')))
}

t.test('the Releases panel: timeline with the current phase, step and weights, the last verdict, and actions with the token', { skip: NO_BROWSER }, async (t) => {
  const gw = await gateway(t)
  const ended = release('r41', 'done', { weight: 100, history: [{ phase: 'deploying', at: at(-600) }, { phase: 'verifying', at: at(-500), weight: 100 }, { phase: 'done', at: at(-400) }] })
  const older = release('r40', 'reverted', { outcome: 'orders: error rate up' })
  const fake: FakeReleases = {
    list: [running(), ended, older],
    calls: [],
    actions: new Map([
      ['pause', (r) => { r.pausedAt = at(0) }],
      ['resume', (r) => { r.pausedAt = null }],
    ]),
  }
  const { page, errors } = await openPage(t, `${gw.adminUrl}/ui`, fake)
  await page.waitForSelector('#login:not([hidden])')
  t.ok(await page.isHidden('#releases'), 'nothing shown without the token')
  await page.fill('#token', TOKEN)
  await page.press('#token', 'Enter')

  await page.waitForSelector('#releases:not([hidden]) [data-release="r42"]')
  t.strictSame(await page.$$eval('#release-list > [data-release]', (els) => els.map((e) => e.getAttribute('data-release'))), ['r42', 'r41'], 'running ones, then the last that ended')
  t.equal(await page.textContent('[data-release="r42"] .rel-phase'), 'shifting')
  const timeline = await page.$$eval('[data-release="r42"] .timeline li', (lis) => lis.map((li) => [li.querySelector('.tl-label')?.textContent, li.className.split(' ').filter((c) => /^tl-(past|current|next)$/.test(c))[0]]))
  t.strictSame(timeline, [
    ['deploying', 'tl-past'], ['warming', 'tl-past'], ['testing', 'tl-past'], ['shifting 10%', 'tl-current'],
    ['shifting 50%', 'tl-next'], ['verifying', 'tl-next'], ['draining', 'tl-next'], ['done', 'tl-next'],
  ])
  t.equal(await page.getAttribute('[data-release="r42"] .tl-current', 'aria-current'), 'step')
  t.equal(await page.textContent('[data-release="r42"] .rel-progress'), 'step 1 of 2 · 10% of traffic on the new color')
  t.match(await page.textContent('[data-release="r42"] .rel-meta'), /^started \d\d:\d\d:\d\d by cli:alice · release 2026\.11$/)
  t.match(await page.textContent('[data-release="r42"] .rel-verdict-at'), /^last verdict \d\d:\d\d:\d\d at 10% \(interim look\)$/)
  t.strictSame(await tableRows(page, 'r42'), [
    ['users1.1.0', 'blue → green', '10%', '0.1% / 0.2%', '21 ms / 20 ms', '84 ms / 80 ms', 'pass'],
    ['orders2.4.0', 'green → blue', '10%', '0.4% / 0.3%', '60 ms / 20 ms', '240 ms / 80 ms', 'fail' + XSS],
  ])
  t.equal(await page.locator('#xss').count(), 0, 'no markup from the API reaches the DOM')
  t.equal(await page.getAttribute('[data-release="r42"] [data-service="orders"] .wbar-fill', 'style'), 'width: 10%;')

  const visible = async (id: string): Promise<string[]> => await page.$$eval(`[data-release="${id}"] .rel-actions button`, (bs) => bs.filter((b) => !(b as HTMLButtonElement).hidden && (b.parentElement as HTMLElement).hidden === false).map((b) => b.textContent ?? ''))
  t.strictSame(await visible('r42'), ['Pause', 'Promote to 100%', 'Abort'])
  t.strictSame(await visible('r41'), [], 'an ended release has no actions')
  t.equal(await page.textContent('[data-release="r41"] .tl-ok .tl-label'), 'done')
  t.match(await page.textContent('[data-release="r41"] .rel-progress'), /^ended \d\d:\d\d:\d\d · 2 steps$/)
  await page.waitForSelector('#events .ev-release')
  t.strictSame(await page.$$eval('#events .ev-release .ev-what', (tds) => tds.map((td) => td.textContent)), [`r40 reverted: ${XSS}`, 'r42 shifting · 10%release 2026.11'], 'release events, newest first')
  t.equal(await page.locator('#xss').count(), 0, 'an outcome in an event stays text')
  t.ok(statSync(await screenshot(page, gw, 'releases.png')).size > 10_000, 'the screenshot was written')

  // Pause: a confirm, then the POST with the token, and the panel follows the answer.
  t.match(await clickConfirm(page, '[data-release="r42"] .btn-pause'), 'Pause release r42?')
  await page.waitForSelector('[data-release="r42"] .btn-resume:not([hidden])')
  t.match(await page.textContent('#notice'), /Pause of r42 done\s*release r42: shifting \(paused\)/)
  t.strictSame(fake.calls.filter((c) => c.method === 'POST'), [{ method: 'POST', path: '/v1/releases/r42/pause', authorization: `Bearer ${TOKEN}` }])
  t.equal(await page.textContent('[data-release="r42"] .rel-phase'), 'shifting · paused')
  t.strictSame(await visible('r42'), ['Resume', 'Promote to 100%', 'Abort'])

  // A refusal shows the server's code.
  fake.actions.delete('resume')
  await clickConfirm(page, '[data-release="r42"] .btn-resume')
  await page.waitForSelector('#notice.notice-error')
  t.match(await page.textContent('#notice'), 'Resume of r42 refused (release_state)')

  // Warming: nothing to promote yet.
  fake.list = [release('r42', 'warming', { history: [{ phase: 'deploying', at: at(-60) }, { phase: 'warming', at: at(-59) }] }), ended]
  await page.waitForSelector('[data-release="r42"][data-phase="warming"]')
  t.strictSame(await visible('r42'), ['Pause', 'Abort'])
  t.equal(await page.textContent('[data-release="r42"] .rel-verdict-at'), 'no verdict yet')
  t.strictSame(await page.$$eval('[data-release="r42"] .tl-next', (lis) => lis.map((li) => li.textContent)), ['testing', 'shifting 10%', 'shifting 50%', 'verifying', 'draining', 'done'])

  // Reverted: it is now the last that ended, so r41 goes; its outcome shows and its actions go.
  fake.list = [{ ...running(), phase: 'reverted', weight: 0, outcome: 'orders: p99 latency 240 ms vs 80 ms', history: [...running().history, { phase: 'reverted', at: at(0) }] }, ended]
  await page.waitForSelector('[data-release="r42"][data-phase="reverted"]')
  t.strictSame(await page.$$eval('#release-list > [data-release]', (els) => els.map((e) => e.getAttribute('data-release'))), ['r42'])
  t.equal(await page.textContent('[data-release="r42"] .rel-outcome'), 'orders: p99 latency 240 ms vs 80 ms')
  t.equal(await page.textContent('[data-release="r42"] .tl-bad .tl-label'), 'reverted')
  t.equal(await page.locator('[data-release="r42"] .tl-next, [data-release="r42"] .tl-current').count(), 0)
  t.ok(await page.isHidden('[data-release="r42"] .rel-actions'))

  // A gateway without releases: no panel.
  fake.list = null
  await page.waitForSelector('#releases[hidden]', { state: 'attached' })
  t.ok(await page.isVisible('[data-service="users"]'), 'the services are shown throughout')
  t.same(errors, [], 'no script errors or CSP violations')
})
