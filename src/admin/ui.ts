// The dashboard served at GET /ui on the admin listener: reads src/admin/ui/ once at
// startup, inlines its CSS and JS into the page, and serves it from memory under a hash-only CSP.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'

// The page lives in real files (so the linter and an editor see them) next to
// this module's source. Both src/admin/ui.ts (tests) and dist/admin/ui.js
// (built) reach them by the same path from the package root, so a plain `tsc`
// build needs no copy step; the Docker image copies the folder in.
const ASSETS = new URL('../../src/admin/ui/', import.meta.url)

function readAsset (name: string): string {
  return readFileSync(new URL(name, ASSETS), 'utf8')
}

/**
 * Puts `body` inline where `html` has `tag`, the one tag that names its file. A
 * tag missing, doubled, or a body that would close its own element early is a
 * packaging mistake: it throws at startup rather than serve a page that breaks.
 */
function inline (html: string, tag: string, element: 'script' | 'style', body: string): string {
  if (html.split(tag).length !== 2) throw new Error(`src/admin/ui/index.html must contain ${tag} exactly once`)
  if (body.toLowerCase().includes(`</${element}`)) throw new Error(`the dashboard's ${element} must not contain </${element}`)
  // A function, so `$` sequences in the body are not replacement patterns.
  return html.replace(tag, () => `<${element}>${body}</${element}>`)
}

const SCRIPT = readAsset('dashboard.js')
const STYLE = readAsset('dashboard.css')

export const UI_HTML = inline(
  inline(readAsset('index.html'), '<link rel="stylesheet" href="dashboard.css">', 'style', STYLE),
  '<script src="dashboard.js"></script>', 'script', SCRIPT)

/** A CSP source for one inline block: the browser runs it only if the hash matches. */
function hashSource (text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`
}

/** Only the page's own inline script and style run, and it talks only to this origin. */
export const UI_CSP = [
  "default-src 'none'",
  `script-src ${hashSource(SCRIPT)}`,
  `style-src ${hashSource(STYLE)}`,
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

export const UI_HEADERS: Readonly<Record<string, string | number>> = {
  'content-type': 'text/html; charset=utf-8',
  'content-length': Buffer.byteLength(UI_HTML),
  'content-security-policy': UI_CSP,
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
}
