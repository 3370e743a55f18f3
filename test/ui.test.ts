// Tests of the dashboard at GET /ui: static HTML under a hash-based CSP served
// without a token, then a real Chromium page that shows, flips, refuses and asks for the token.

import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Page } from 'playwright-core'
import { admin, http1, serviceYaml, startBackend, startGateway, type TestGateway } from './helpers/index.js'

const CHROMIUM = '/usr/bin/chromium'
const NO_BROWSER = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (.ci/run installs it with apt-get)`

/** users and orders, blue live; orders' green target is a closed port, so its probe fails and the gate refuses it. */
async function fleet (t: Test, head = ''): Promise<TestGateway> {
  const [ub, ug, ob, dead] = await Promise.all(['users-blue', 'users-green', 'orders-blue', 'dead'].map(async (n) => await startBackend(t, n)))
  await dead.close()
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

/** A headless Chromium on a fresh profile; page errors and CSP violations are collected. */
async function openPage (t: Test, url: string): Promise<{ page: Page, errors: string[] }> {
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
