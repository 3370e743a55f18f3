// The dashboard's shadow panel in a real Chromium: a real gateway serves the page and /v1/state,
// and GET/DELETE /v1/services/NAME/shadow are answered by a fake in the DESIGN-15 shapes (the one thing to swap for the real API).

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

/** The shadow answer per service; null: the gateway answers 404 (a gateway from before shadow traffic). */
interface FakeShadow { views: Map<string, Record<string, any> | null>, calls: Call[] }

async function openPage (t: Test, url: string, fake: FakeShadow): Promise<{ page: Page, errors: string[] }> {
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
  // The XSS probe: an example that would run script if it ever became markup.
  await page.exposeFunction('xssRan', () => { errors.push('an example ran as markup') })
  await page.route(/\/v1\/services\/[^/]+\/shadow$/, async (route: Route) => {
    const req = route.request()
    const path = new URL(req.url()).pathname
    const authorization = req.headers().authorization
    fake.calls.push({ method: req.method(), path, authorization })
    if (authorization !== `Bearer ${TOKEN}`) return await route.fulfill({ status: 401, json: { error: 'unauthorized', message: 'missing or wrong bearer token' } })
    const name = decodeURIComponent(path.split('/')[3])
    const view = fake.views.get(name)
    if (view === null || view === undefined) return await route.fulfill({ status: 404, json: { error: 'not_found', message: `no admin endpoint ${req.method()} ${path}` } })
    if (req.method() === 'DELETE') {
      Object.assign(view, { active: false, sample: null, until: null, source: null })
      return await route.fulfill({ json: { ...view, generation: 7 } })
    }
    await route.fulfill({ json: view })
  })
  // The shadow events the admin API would log, once (the page asks with ?since= after that).
  await page.route(/\/v1\/events(\?|$)/, async (route: Route) => {
    const first = !route.request().url().includes('since=')
    await route.fulfill({ json: { events: first ? SHADOW_EVENTS : [] } })
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

const SHADOW_EVENTS = [
  { id: 1, type: 'shadow', time: new Date().toISOString(), actor: 'cli:alice', reason: 'check 1.1.0', service: 'users', action: 'start', sample: 0.2, until: new Date(Date.now() + 600_000).toISOString(), generation: 1 },
  { id: 2, type: 'shadow', time: new Date().toISOString(), actor: 'shadow', reason: 'the shadow session\'s duration ran out', action: 'expired', services: ['orders', 'users'], generation: 2 },
  { id: 3, type: 'shadow', time: new Date().toISOString(), actor: 'cli:alice', reason: null, service: 'orders', action: 'stop', generation: 3 },
]

const XSS = '"<img src=x onerror=xssRan()><b id=xss>bold</b>"'
const DROPS = { busy: 4, no_target: 0, failed: 1, body_too_large: 0 }

function usersView (): Record<string, any> {
  return {
    active: true,
    sample: 0.2,
    until: Date.now() + 600_000,
    source: 'api',
    gate: { maxShadowDiff: 0.01, minShadowCompared: 200 },
    sent: 1200,
    compared: 1150,
    matched: 1100,
    differed: 14,
    dropped: 5,
    noise: 36,
    top: [
      { where: '$.plan', count: 14, example: { live: '"pro"', idle: XSS }, endpoints: [{ endpoint: 'GET /api/users/{id}', count: 10 }, { endpoint: 'GET /api/teams/{id}', count: 4 }] },
      { where: 'header:x-version', count: 3, example: { live: '1.0.0', idle: '1.1.0' } },
    ],
    drops: DROPS,
    bodyNotCompared: 2,
    noiseWhere: [{ where: '$.requestId', count: 120 }, { where: '$.timestamp', endpoint: 'GET /api/users/{id}', count: 118 }],
    probes: 120,
  }
}

t.test('the shadow panel: counts, the differing share against the gate, top places with escaped examples, noise; Stop with the token', { skip: NO_BROWSER }, async (t) => {
  const gw = await gateway(t)
  const off = { active: false, sample: null, until: null, source: null, sent: 0, compared: 0, matched: 0, differed: 0, dropped: 0, noise: 0, top: [], drops: { busy: 0, no_target: 0, failed: 0, body_too_large: 0 }, bodyNotCompared: 0, noiseWhere: [], probes: 0 }
  const fake: FakeShadow = { views: new Map([['users', usersView()], ['orders', off]]), calls: [] }
  const { page, errors } = await openPage(t, `${gw.adminUrl}/ui`, fake)
  await page.waitForSelector('#login:not([hidden])')
  await page.fill('#token', TOKEN)
  await page.press('#token', 'Enter')

  const panel = '[data-service="users"] .shadow'
  await page.waitForSelector(`${panel}:not([hidden])`)
  t.ok(await page.isHidden('[data-service="orders"] .shadow'), 'off and nothing compared: no panel')
  t.match(await page.textContent(`${panel} .shadow-state`), /^on · 20% of blue copied to green · until \d\d:\d\d:\d\d · started by the admin API$/)
  const stats = await page.$$eval(`${panel} .shadow-stats .stat`, (els) => els.map((e) => [e.querySelector('span')?.textContent, e.querySelector('b')?.textContent]))
  t.strictSame(stats, [['sent', '1200'], ['compared', '1150'], ['matched', '1100'], ['differed', '14 (1.2%)'], ['noise', '36'], ['dropped', '5']])
  t.ok(await page.$eval(`${panel} .stat:nth-child(4)`, (e) => e.classList.contains('stat-bad')), 'differences are marked')
  t.equal(await page.textContent(`${panel} .shadow-gate-text`), 'differing 1.2% of 1150 pairs · gate 1.0% · a flip to green is refused')
  t.ok(await page.$eval(`${panel} .shadow-gate`, (e) => e.classList.contains('shadow-gate-over')))
  t.equal(await page.textContent(`${panel} .shadow-notes`), 'dropped: 4 busy, 1 failed · 2 compared by status and headers only (body above maxBody) · 120 noise probes')
  const rows = await page.$$eval(`${panel} .shadow-top tbody tr`, (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')))
  t.strictSame(rows, [['$.plan', '14', '"pro"', XSS], ['header:x-version', '3', '1.0.0', '1.1.0']], 'the example shows as text')
  t.equal(await page.locator('#xss').count(), 0, 'no markup from an example reaches the DOM')
  t.equal(await page.locator('.shadow img').count(), 0)
  t.equal(await page.getAttribute(`${panel} .shadow-top tbody tr:first-child`, 'title'), 'on GET /api/users/{id} (10), GET /api/teams/{id} (4)', 'the endpoints where a place differed, on hover')
  t.strictSame(await page.$$eval(`${panel} .shadow-noise-list li`, (lis) => lis.map((li) => li.textContent)), ['$.requestId ×120', '$.timestamp on GET /api/users/{id} ×118'], 'a noise place names its endpoint when the server does')
  await page.waitForSelector('#events .ev-shadow')
  const evs = await page.$$eval('#events .ev-shadow .ev-what', (tds) => tds.map((td) => td.textContent))
  t.equal(evs.length, 3)
  t.equal(evs[0], 'orders: shadow traffic stopped')
  t.equal(evs[1], 'orders, users: shadow traffic ended (its duration ran out)the shadow session\'s duration ran out')
  t.match(evs[2], /^users: shadow traffic on, 20% of requests copied · until \d\d:\d\d:\d\dcheck 1\.1\.0$/)
  t.ok(statSync(await screenshot(page, gw, 'shadow.png')).size > 10_000, 'the screenshot was written')

  // Stop: a confirm, the DELETE with the token; the panel stays with the last counts, marked off.
  const asked = page.waitForEvent('dialog').then(async (dialog) => {
    const q = dialog.message()
    await dialog.accept()
    return q
  })
  await page.click(`${panel} .btn-shadow-stop`)
  t.match(await asked, /^Stop shadow traffic to the idle color of users\?/)
  await page.waitForSelector(`${panel} .btn-shadow-stop[hidden]`, { state: 'attached' })
  t.strictSame(fake.calls.filter((c) => c.method === 'DELETE'), [{ method: 'DELETE', path: '/v1/services/users/shadow', authorization: `Bearer ${TOKEN}` }])
  t.match(await page.textContent('#notice'), /Stopping shadow traffic of users done/)
  t.equal(await page.textContent(`${panel} .shadow-state`), 'off · the last comparison')

  // Within the gate, under the minimum: judged later; a comparison without differences says so.
  fake.views.set('orders', { ...off, active: true, sample: 1, source: 'config', gate: { maxShadowDiff: 0.05, minShadowCompared: 200 }, sent: 50, compared: 50, matched: 45, noise: 5 })
  await page.waitForSelector('[data-service="orders"] .shadow:not([hidden])')
  t.equal(await page.textContent('[data-service="orders"] .shadow-gate-text'), 'differing 0.0% of 50 pairs · gate 5.0% · judged from 200 pairs')
  t.ok(await page.isHidden('[data-service="orders"] .shadow-top'))
  t.equal(await page.textContent('[data-service="orders"] .shadow-none'), 'no differences counted')
  t.ok(await page.isVisible('[data-service="orders"] .btn-shadow-stop'))

  // A gateway without shadow traffic (404): no panel, and nothing wrong.
  fake.views.set('users', null)
  await page.waitForSelector(`${panel}[hidden]`, { state: 'attached' })
  t.notOk((await page.textContent('#conn'))?.includes('cannot reach'), 'a 404 is not a connection problem')
  t.same(errors, [], 'no script errors, CSP violations or script from an example')
})
