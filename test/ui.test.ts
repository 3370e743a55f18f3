// Tests of the dashboard at GET /ui: static HTML under a hash-based CSP served
// without a token, then a real Chromium page that shows, flips, refuses, asks for
// the token, and shows the store and the fleet.

import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Page, type Route } from 'playwright-core'
import { admin, type Backend, http1, refusedUrl, serviceYaml, startBackend, startGateway, type TestGateway } from './helpers/index.js'

const CHROMIUM = '/usr/bin/chromium'
const NO_BROWSER = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (.ci/run installs it with apt-get)`

/** users and orders, blue live; orders' green target is a closed port, so its probe fails and the gate refuses it. */
async function fleet (t: Test, head = ''): Promise<TestGateway> {
  const [ub, ug, ob] = await Promise.all(['users-blue', 'users-green', 'orders-blue'].map(async (n) => await startBackend(t, n)))
  const dead = { url: await refusedUrl() } as Backend
  // orders blue fails the paths that ask for it, so its error rate shows.
  ob.handler = (req, res) => {
    res.writeHead(req.url?.endsWith('/fail') === true ? 500 : 200, { 'content-type': 'application/json' })
    res.end('{}')
  }
  const health = '    health: { interval: 250ms, timeout: 250ms }\n'
  return await startGateway(t, `${head}services:
${serviceYaml('users', '/api/users', [ub], [ug])}
${serviceYaml('orders', '/api/orders', [ob], [dead], health)}`)
}

async function liveColors (gw: TestGateway, token?: string): Promise<Record<string, string>> {
  const res = await admin(gw.adminUrl, 'GET', '/v1/state', undefined, token)
  if (res.status !== 200) throw new Error(`GET /v1/state: ${res.status} ${res.text}`)
  return Object.fromEntries(Object.entries(res.json.services).map(([name, s]: [string, any]) => [name, s.live]))
}

/** A headless Chromium on a fresh profile; page errors and CSP violations are collected. `before` runs before the page loads. */
async function openPage (t: Test, url: string, before?: (page: Page) => Promise<void>): Promise<{ page: Page, errors: string[] }> {
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
  // Chromium logs every 4xx answer (401 before the token, the gate's 409); the page handles those itself.
  page.on('console', (msg) => { if (msg.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) errors.push(msg.text()) })
  await before?.(page)
  await page.goto(url)
  return { page, errors }
}

/**
 * A full-page picture in the gateway's temp folder; with SWITCHYARD_UI_SCREENSHOTS
 * set to a folder, a copy is kept there to look at after the run.
 */
async function screenshot (page: Page, gw: TestGateway, name: string): Promise<string> {
  const file = join(gw.dir, name)
  await page.screenshot({ path: file, fullPage: true })
  const keep = process.env.SWITCHYARD_UI_SCREENSHOTS
  if (keep !== undefined && keep !== '') copyFileSync(file, join(keep, name))
  return file
}

/** Clicks a button and answers its confirm dialog; returns the question asked. */
async function clickConfirm (page: Page, selector: string, accept = true): Promise<string> {
  const asked = page.waitForEvent('dialog').then(async (dialog) => {
    const question = dialog.message()
    await (accept ? dialog.accept() : dialog.dismiss())
    return question
  })
  await page.click(selector)
  return await asked
}

t.test('GET /ui is static HTML under a hash-only CSP, served without the token', async (t) => {
  const gw = await fleet(t, 'admin: { token: s3cret }\n')
  const res = await http1(`${gw.adminUrl}/ui`)
  t.equal(res.status, 200)
  t.equal(res.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(res.headers['cache-control'], 'no-store')
  t.match(res.text, /^<!doctype html>/)
  const csp = String(res.headers['content-security-policy'])
  t.match(csp, /default-src 'none'/)
  t.match(csp, /connect-src 'self'/)
  t.notMatch(csp, /unsafe-inline|unsafe-eval/)
  const hash = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`
  const script = /<script>([\s\S]*?)<\/script>/.exec(res.text)?.[1] ?? ''
  const style = /<style>([\s\S]*?)<\/style>/.exec(res.text)?.[1] ?? ''
  t.ok(csp.includes(`script-src ${hash(script)}`), 'the inline script is allowed by its hash')
  t.ok(csp.includes(`style-src ${hash(style)}`), 'the inline style is allowed by its hash')
  const asset = (name: string): string => readFileSync(new URL(`../src/admin/ui/${name}`, import.meta.url), 'utf8')
  t.equal(script, asset('dashboard.js'), 'the inline script is src/admin/ui/dashboard.js as it is on disk')
  t.equal(style, asset('dashboard.css'), 'the inline style is src/admin/ui/dashboard.css as it is on disk')
  t.notMatch(res.text, /<script src|<link rel="stylesheet"|(src|href)="https?:|@import/, 'no external assets')

  t.equal((await http1(`${gw.adminUrl}/ui/`)).status, 200, 'a trailing slash is the same page')
  const head = await http1(`${gw.adminUrl}/ui`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.text, '')
  const post = await admin(gw.adminUrl, 'POST', '/ui', {})
  t.equal(post.status, 405)
  t.equal(post.headers.allow, 'GET, HEAD')
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/state')).status, 401, 'the API itself still needs the token')
  t.equal((await admin(gw.adminUrl, 'GET', '/v1/ui')).status, 401, 'the page is not under /v1')
})

t.test('the dashboard shows services and live colors, flips after a confirm, and shows refusals', { skip: NO_BROWSER }, async (t) => {
  const gw = await fleet(t)
  // Some traffic for the sparklines, with a few errors on orders.
  await Promise.all([
    ...Array.from({ length: 30 }, async () => await http1(`${gw.url}/api/users/7`)),
    ...Array.from({ length: 12 }, async (_, i) => await http1(`${gw.url}/api/orders/${i % 4 === 0 ? 'fail' : '1'}`)),
  ])
  const { page, errors } = await openPage(t, `${gw.adminUrl}/ui`)

  await page.waitForSelector('[data-service="users"][data-live="blue"]')
  await page.waitForSelector('[data-service="orders"][data-live="blue"]')
  t.equal(await page.textContent('[data-service="users"] .live-color'), 'blue')
  t.equal(await page.textContent('[data-service="users"] .btn-flip'), 'Flip to green')
  t.equal(await page.textContent('[data-service="users"] .env-blue .badge'), 'live')
  t.equal(await page.textContent('[data-service="users"] .env-green .badge'), 'idle')
  t.match(await page.textContent('[data-service="users"] .route'), '/api/users')
  t.match(await page.textContent('[data-service="users"] .env-blue .target-url'), /^http:\/\/127\.0\.0\.1:\d+$/)

  // Dismissed: nothing happens.
  const question = await clickConfirm(page, '[data-service="users"] .btn-flip', false)
  t.match(question, 'Flip users from blue to green?')
  t.same(await liveColors(gw), { users: 'blue', orders: 'blue' }, 'a dismissed confirm changes nothing')

  // Accepted: the page and the API both show green.
  await clickConfirm(page, '[data-service="users"] .btn-flip')
  await page.waitForSelector('[data-service="users"][data-live="green"]')
  t.same(await liveColors(gw), { users: 'green', orders: 'blue' })
  t.match(await page.textContent('#notice'), 'Flip of users done')
  t.equal(await page.textContent('[data-service="users"] .env-green .badge'), 'live')
  await page.waitForSelector('[data-service="users"] .guard:not([hidden])')
  t.match(await page.textContent('[data-service="users"] .guard'), /watching\s*green/)
  t.equal(await page.textContent('[data-service="users"] .btn-rollback'), 'Roll back to blue')
  await page.waitForSelector('#events .ev-flip')
  t.match(await page.textContent('#events .ev-flip'), /users\s*blue\s*→\s*green/)

  // orders' green is unhealthy: the gate refuses, and the page shows why.
  await page.waitForSelector('[data-service="orders"] .env-green .hdot-bad')
  await clickConfirm(page, '[data-service="orders"] .btn-flip')
  await page.waitForSelector('#notice.notice-error')
  t.match(await page.textContent('#notice'), /Flip of orders refused \(gate_failed\)/)
  t.match(await page.textContent('#notice .failures'), /orders\/green: 0 healthy target/)
  t.same(await liveColors(gw), { users: 'green', orders: 'blue' })

  // Wait for a sparkline to have drawn the traffic, then keep a picture of the page.
  await page.waitForFunction(() => (document.querySelector('[data-service="orders"] .env-blue .spark-err')?.getAttribute('d') ?? '') !== '')
  t.ok(statSync(await screenshot(page, gw, 'dashboard.png')).size > 10_000, 'the screenshot was written')
  t.same(errors, [], 'no script errors or CSP violations')
})

t.test('with a token set, the dashboard asks for it, keeps it for the tab and acts with it', { skip: NO_BROWSER }, async (t) => {
  const gw = await fleet(t, 'admin: { token: s3cret }\n')
  const { page, errors } = await openPage(t, `${gw.adminUrl}/ui`)

  await page.waitForSelector('#login:not([hidden])')
  t.equal(await page.locator('[data-service]').count(), 0, 'nothing is shown without the token')
  await page.fill('#token', 'wrong')
  await page.press('#token', 'Enter')
  await page.waitForSelector('#login.login-wrong:not([hidden])')
  t.match(await page.textContent('#login-msg'), 'not accepted')
  t.ok(statSync(await screenshot(page, gw, 'login.png')).size > 1000, 'the screenshot was written')

  await page.fill('#token', 's3cret')
  await page.click('#login button[type=submit]')
  await page.waitForSelector('[data-service="users"][data-live="blue"]')
  await page.waitForSelector('[data-service="orders"][data-live="blue"]')
  t.ok(await page.isHidden('#login'))
  t.equal(await page.evaluate(() => sessionStorage.getItem('switchyard.token')), 's3cret')

  await clickConfirm(page, '[data-service="users"] .btn-flip')
  await page.waitForSelector('[data-service="users"][data-live="green"]')
  t.same(await liveColors(gw, 's3cret'), { users: 'green', orders: 'blue' }, 'the action carried the token')

  // A reload keeps the token for the tab: no form this time.
  await page.reload()
  await page.waitForSelector('[data-service="users"][data-live="green"]')
  t.ok(await page.isHidden('#login'))

  // Text from the API stays text.
  const reason = '<b id="xss">bold</b>'
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/rollback', { reason }, 's3cret')).status, 200)
  await page.waitForSelector('#events .ev-rollback')
  t.equal(await page.textContent('#events .ev-rollback .ev-reason'), reason)
  t.equal(await page.locator('#xss').count(), 0, 'no markup from the API reaches the DOM')
  await page.waitForSelector('[data-service="users"][data-live="blue"]')
  t.same(errors, [], 'no script errors or CSP violations')
})

t.test('the dashboard shows the store, and for an etcd fleet the leader and each replica, lagging ones marked', { skip: NO_BROWSER }, async (t) => {
  const gw = await fleet(t)
  // The gateway's real state, with the store and fleet an etcd replica would have (or, as an older server, neither).
  let extra: Record<string, unknown> = {}
  const { page, errors } = await openPage(t, `${gw.adminUrl}/ui`, async (page) => {
    await page.route('**/v1/state', async (route: Route) => {
      const res = await route.fetch()
      const { store: _store, fleet: _fleet, ...rest } = await res.json() as Record<string, unknown>
      await route.fulfill({ response: res, json: { ...rest, ...extra } })
    })
  })
  const store = { kind: 'etcd', connected: true, revision: 42, where: 'etcd http://127.0.0.1:2379 prefix /switchyard/prod' }
  const replicas = [
    { id: 'gw-a', admin: 'http://10.0.0.5:9901', generation: 7, revision: 42, ageMs: 400, leader: true },
    { id: '<b id="xss">gw-b</b>', admin: 'javascript:alert(1)', generation: 7, revision: 42, ageMs: 1200, leader: false },
    { id: 'gw-c', admin: null, generation: 6, revision: 40, ageMs: 3100, leader: false },
  ]
  extra = { store, fleet: { id: 'gw-a', leader: 'gw-a', converged: false, replicas } }

  await page.waitForSelector('#fleet:not([hidden]) [data-replica="gw-c"]')
  t.equal(await page.textContent('#store'), 'etcd connected · revision 42')
  t.equal(await page.getAttribute('#store', 'title'), store.where)
  t.equal(await page.textContent('#fleet-leader'), 'leader gw-a')
  t.equal(await page.textContent('#fleet-sync'), 'converging')
  t.ok(await page.isHidden('#fleet-down'))
  const rows = await page.$$eval('#replicas tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)))
  t.strictSame(rows, [
    ['gw-athis', 'http://10.0.0.5:9901', '7', '0.4 s ago', 'leader'],
    ['<b id="xss">gw-b</b>', 'javascript:alert(1)', '7', '1.2 s ago', ''],
    ['gw-c', '–', '6lagging', '3.1 s ago', ''],
  ])
  t.equal(await page.getAttribute('[data-replica="gw-a"] a', 'href'), 'http://10.0.0.5:9901/ui', 'an http admin URL links to that replica\'s dashboard')
  t.equal(await page.locator('#replicas a').count(), 1, 'anything else is text, not a link')
  t.equal(await page.locator('#xss').count(), 0, 'no markup from the API reaches the DOM')
  t.ok(await page.isVisible('[data-replica="gw-c"].replica-lagging .tag-lagging'))
  t.ok(await page.isVisible('[data-replica="gw-a"].replica-this'))
  t.ok(statSync(await screenshot(page, gw, 'fleet.png')).size > 10_000, 'the screenshot was written')

  extra = { store: { ...store, connected: false }, fleet: { id: 'gw-a', leader: null, converged: true, replicas: replicas.map((r) => ({ ...r, generation: 7, leader: false })) } }
  await page.waitForSelector('#store.store-bad')
  t.equal(await page.textContent('#store'), 'etcd unreachable · revision 42')
  await page.waitForSelector('#fleet-down:not([hidden])')
  t.equal(await page.textContent('#fleet-leader'), 'no leader')
  t.equal(await page.textContent('#fleet-sync'), 'converged')
  t.equal(await page.locator('#replicas .replica-lagging').count(), 0)

  // A file store: a badge, no panel.
  extra = { store: { kind: 'file', connected: true, revision: 3, where: 'state file /data/state.json' }, fleet: { id: 'h:1', leader: 'h:1', converged: true, replicas: [replicas[0]] } }
  await page.waitForSelector('#store.store-file')
  t.equal(await page.textContent('#store'), 'state file')
  await page.waitForSelector('#fleet[hidden]', { state: 'attached' })

  // An older server: neither.
  extra = {}
  await page.waitForSelector('#store[hidden]', { state: 'attached' })
  t.ok(await page.isHidden('#fleet'))
  t.ok(await page.isVisible('[data-service="users"]'), 'the services are shown throughout')
  t.same(errors, [], 'no script errors or CSP violations')
})
