// The dashboard's call chains panel in a real Chromium: a real gateway with
// pinning on, real flips and real pinned requests; the panel shows the kept
// generations with their pinned counts and the five result counts, and empties
// when keep runs out. Without pinning the panel is not there.

import t, { type Test } from 'tap'
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Page } from 'playwright-core'
import { admin, http1, serviceYaml, startBackend, startGateway, type TestGateway } from './helpers/index.js'

const CHROMIUM = '/usr/bin/chromium'
const NO_BROWSER = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (.ci/run installs it with apt-get)`

async function gateway (t: Test, head: string): Promise<TestGateway> {
  const [blue, green] = await Promise.all(['blue', 'green'].map(async (n) => await startBackend(t, n)))
  return await startGateway(t, `${head}services:\n${serviceYaml('svc', '/', [blue], [green])}`)
}

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
  page.on('console', (msg) => { if (msg.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) errors.push(msg.text()) })
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

async function flip (t: Test, gw: TestGateway): Promise<number> {
  const res = await admin(gw.adminUrl, 'POST', '/v1/services/svc/flip', {})
  t.equal(res.status, 200, 'flipped')
  return res.json.generation as number
}

t.test('the call chains panel shows the kept generations after real flips, their pinned requests and the counts; keep empties it', { skip: NO_BROWSER }, async (t) => {
  const gw = await gateway(t, 'pinning: { keep: 4s, trust: [127.0.0.0/8] }\n')
  const { page, errors } = await openPage(t, `${gw.adminUrl}/ui`)
  await page.waitForSelector('#pinning:not([hidden])')
  t.equal(await page.textContent('#pinning-note'), 'generations kept 4 s after a flip · baggage believed from 127.0.0.0/8')
  t.ok(await page.isVisible('#pinning-none'), 'nothing kept before a flip')
  t.equal(await page.locator('#pinning-kept tr').count(), 0)

  const g0 = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.generation as number
  const g1 = await flip(t, gw)
  const g2 = await flip(t, gw)
  const pinned = async (gen: number | string): Promise<string> => (await http1(`${gw.url}/x`, { headers: { baggage: `switchyard-gen=${gen}` } })).json.backend as string
  t.equal(await pinned(g1), 'green', 'a request pinned to the middle generation goes to green')
  t.equal(await pinned(g1), 'green')
  t.equal(await pinned(g1), 'green')
  t.equal(await pinned(g0), 'blue')
  t.equal(await pinned(g2), 'blue')
  t.equal(await pinned(424242), 'blue')
  t.equal(await pinned('x1'), 'blue')

  const rows = '#pinning-kept tr'
  await page.waitForFunction(() => document.querySelector('#pinning-kept tr[data-generation] .kept-pinned')?.textContent === '3')
  const cells = await page.$$eval(rows, (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')))
  t.equal(cells.length, 2, 'two generations kept')
  t.strictSame(cells.map((c) => [c[0], c[3]]), [[String(g1), '3'], [String(g0), '1']], 'newest first, with the requests each routed')
  const st = (await admin(gw.adminUrl, 'GET', '/v1/state')).json.pinning
  for (const [i, c] of cells.entries()) {
    t.match(c[1], /^\d\d:\d\d:\d\d$/, 'retired at a clock time')
    t.match(c[2], /^\d\d:\d\d:\d\d \(in [0-4] s\)$/, 'expires at a clock time, within keep')
    const expires = new Date(st.kept[i].expiresAt as string)
    const pad = (n: number): string => String(n).padStart(2, '0')
    t.equal(c[2].slice(0, 8), `${pad(expires.getHours())}:${pad(expires.getMinutes())}:${pad(expires.getSeconds())}`, 'the expiry /v1/state gives')
  }
  await page.waitForFunction(() => document.querySelector('#pinning-stats [data-result="pinned"] b')?.textContent === '5')
  const stats = await page.$$eval('#pinning-stats .stat', (els) => els.map((e) => [e.querySelector('span')?.textContent, e.querySelector('b')?.textContent]))
  t.strictSame(stats, [['pinned', '5'], ['expired', '1'], ['untrusted', '0'], ['invalid', '1'], ['unavailable', '0']], 'the five counts')
  t.ok(await page.$eval('#pinning-stats [data-result="expired"]', (e) => e.classList.contains('stat-bad')), 'a fallback is marked')
  t.notOk(await page.$eval('#pinning-stats [data-result="untrusted"]', (e) => e.classList.contains('stat-bad')), 'a zero is not')
  t.ok(await page.isHidden('#pinning-none'))
  t.ok(statSync(await screenshot(page, gw, 'pinning.png')).size > 10_000, 'the screenshot was written')

  // keep (4 s) runs out: the rows go and the panel says nothing is kept; the counts stay.
  await page.waitForSelector('#pinning-none:not([hidden])', { timeout: 8000 })
  t.equal(await page.locator(rows).count(), 0, 'no generation kept')
  t.equal(await page.textContent('#pinning-stats [data-result="pinned"] b'), '5', 'the counts stay')
  t.same(errors, [], 'no script errors or CSP violations')
})

t.test('without pinning the panel is not there', { skip: NO_BROWSER }, async (t) => {
  const gw = await gateway(t, '')
  const { page, errors } = await openPage(t, `${gw.adminUrl}/ui`)
  await page.waitForSelector('[data-service="svc"]')
  await flip(t, gw)
  await page.waitForFunction(() => document.getElementById('conn')?.textContent?.startsWith('updated') === true)
  t.ok(await page.isHidden('#pinning'), 'hidden')
  t.same(errors, [], 'no script errors')
})
