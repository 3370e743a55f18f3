// The docs stand on their own: every config key the loader accepts, every error code
// and every admin route is documented under docs/, and the docs link only inside the repository.

import t from 'tap'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CONFIG_KEYS, LIST_ITEM, SECTION_KEYS, type KeyTree } from '../src/config/keys.js'
import { parseConfig } from '../src/config/load.js'
import { ERRORS } from '../src/errors.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8')

const CONFIG_DOC = 'docs/config.md'
const ADMIN_DOC = 'docs/admin-api.md'
const LINKED_DOCS = ['README.md', 'ARCHITECTURE.md', 'SECURITY.md', 'bench/README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)]

/** A markdown text without its fenced code blocks (what is left is prose, tables and headings). */
function stripFences (md: string): string {
  return md.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[ \t]*$/gm, '')
}

function fences (md: string): string[] {
  return [...md.matchAll(/^(```|~~~)[^\n]*\n([\s\S]*?)^\1[ \t]*$/gm)].map((m) => m[2])
}

/** Inline code spans outside fenced blocks, headings and tables included. */
function codeSpans (md: string): string[] {
  return [...stripFences(md).matchAll(/`([^`\n]+)`/g)].map((m) => m[1])
}

/** Table rows outside fenced blocks, as lists of trimmed cells. */
function tableRows (md: string): string[][] {
  return stripFences(md).split('\n')
    .filter((line) => /^\|.*\|\s*$/.test(line.trim()))
    .map((line) => line.trim().replace(/^\||\|$/g, '').split('|').map((cell) => cell.trim()))
}

/** The code spans of one cell (`a`, `b` -> [a, b]). */
function spansOf (cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1])
}

/**
 * Every key path the loader accepts, as the config reference writes it:
 * `client.headerTimeout`, `services.<name>.smoke[].path`. The per-service
 * sections are accepted both under `defaults` and under each service, and
 * documented once: their own place in full (`defaults.timeouts`,
 * `services.<name>.timeouts`), their keys relative to the section
 * (`timeouts.connect`). `leaf` says whether the key holds a value rather
 * than a mapping.
 */
function keyPaths (tree: KeyTree, prefix = ''): Array<{ path: string, leaf: boolean }> {
  const sections = new Set<KeyTree | true>(Object.values(SECTION_KEYS))
  const out: Array<{ path: string, leaf: boolean }> = []
  for (const [key, sub] of Object.entries(tree)) {
    const path = key === LIST_ITEM ? `${prefix}[]` : prefix === '' ? key : `${prefix}.${key}`
    if (key !== LIST_ITEM) out.push({ path, leaf: sub === true })
    if (sub !== true) out.push(...keyPaths(sub, sections.has(sub) ? key : path))
  }
  const seen = new Set<string>()
  return out.filter((p) => {
    if (seen.has(p.path)) return false
    seen.add(p.path)
    return true
  })
}

/** Accepted key paths the reference leaves out: a value key needs a table row of its own, a mapping a mention. */
function undocumentedKeys (doc: string): string[] {
  const rowKeys = new Set(tableRows(doc).flatMap((cells) => spansOf(cells[0])))
  const spans = new Set(codeSpans(doc))
  return keyPaths(CONFIG_KEYS).filter((p) => p.leaf ? !rowKeys.has(p.path) : !spans.has(p.path)).map((p) => p.path)
}

/** Error codes without a table row `| status | `code` |` giving the catalogue's status. */
function undocumentedErrors (doc: string): string[] {
  const rows = tableRows(doc)
  return Object.entries(ERRORS)
    .filter(([code, spec]) => !rows.some((cells) => cells[0] === String(spec.status) && spansOf(cells[1] ?? '').includes(code)))
    .map(([code]) => code)
}

interface Route { path: string, methods: string[] }

/**
 * The routes src/admin/server.ts answers, read from its source: the
 * `path === '/x'` literals, the `rest === '/x'` ones and `/^...$/.exec(rest)`
 * patterns under the `/v1/services/NAME` prefix, and the methods of the
 * `allow(...)` call that follows each (none: any method). A capture group
 * becomes `{}`, which the docs write as `{name}`.
 */
function adminRoutes (source: string): Route[] {
  const patternPath = (re: string): string => re.replace(/^\^|\$$/g, '').replace(/\(\[\^\/\]\+\)/g, '{}').replace(/\(\\\/\.\*\)\?/, '').replace(/\\\//g, '/')
  const prefixRe = /\/(\^\\\/v1\\\/services\\\/[^\s]*?)\/\.exec\(path\)/.exec(source)
  const prefix = prefixRe === null ? undefined : patternPath(prefixRe[1])
  const found: Array<{ index: number, end: number, path: string }> = []
  for (const m of source.matchAll(/\bpath === '(\/[^']*)'/g)) found.push({ index: m.index, end: m.index + m[0].length, path: m[1] })
  if (prefix !== undefined) {
    for (const m of source.matchAll(/\brest === '(\/[^']*)'/g)) found.push({ index: m.index, end: m.index + m[0].length, path: prefix + m[1] })
    for (const m of source.matchAll(/\/(\^[^\s]*?\$)\/\.exec\(rest\)/g)) found.push({ index: m.index, end: m.index + m[0].length, path: prefix + patternPath(m[1]) })
  }
  found.sort((a, b) => a.index - b.index)
  return found.map((f, i) => {
    const until = found[i + 1]?.index ?? source.length
    const allow = /\ballow\(('[^)]*)\)/.exec(source.slice(f.end, until))
    return { path: f.path, methods: allow === null ? [] : [...allow[1].matchAll(/'([A-Z]+)'/g)].map((m) => m[1]) }
  })
}

/** Routes (with each method) that no code span of the doc names, e.g. `POST /v1/services/{name}/flip`. */
function undocumentedRoutes (doc: string, routes: Route[]): string[] {
  const spans = codeSpans(doc)
  const missing: string[] = []
  for (const r of routes) {
    const path = r.path.split('{}').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('\\{[a-z]+\\}')
    for (const method of r.methods.length === 0 ? ['[A-Z]+'] : r.methods) {
      const re = new RegExp(`^${method} ${path}$`)
      if (!spans.some((s) => re.test(s))) missing.push(`${r.methods.length === 0 ? 'ANY' : method} ${r.path}`)
    }
  }
  return missing
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens. */
function anchors (md: string): Set<string> {
  const out = new Set<string>()
  for (const m of stripFences(md).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    out.add(m[1].toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').trim().replace(/\s/g, '-'))
  }
  return out
}

/** URLs in code may show where things run: this machine, or a name reserved for examples. */
function isExampleHost (host: string): boolean {
  // Also the address blocks reserved for documentation (RFC 5737).
  return ['localhost', '127.0.0.1', '[::1]', '0.0.0.0', 'host'].includes(host) || /(^|\.)example(\.(com|net|org))?$/.test(host) ||
    /^(192\.0\.2|198\.51\.100|203\.0\.113)\.\d+$/.test(host)
}

/** Why a doc reaches outside the repository, or names something that is not there; one line per problem. */
function linkProblems (file: string, md: string): string[] {
  const problems: string[] = []
  if (/SPEC\.md|\/work\/|\.\.\/shared\b/.test(md)) problems.push(`${file}: names a file outside the repository (SPEC.md, /work/, ../shared)`)
  const prose = stripFences(md)
  const code = [...fences(md), ...codeSpans(md)].join('\n')
  for (const m of prose.replace(/`[^`\n]+`/g, '').matchAll(/\b(?:https?|ftp):\/\/[^\s)>\]]*/g)) problems.push(`${file}: URL outside code: ${m[0]}`)
  for (const m of code.matchAll(/\bhttps?:\/\/([A-Za-z0-9$][^/\s"'`)>:,]*|\[[^\]]+\])/g)) {
    if (!isExampleHost(m[1].toLowerCase())) problems.push(`${file}: URL to a real host in code: ${m[0]}`)
  }
  const targets = [
    ...[...prose.replace(/`[^`\n]+`/g, (s) => s.replace(/[[\]()]/g, ' ')).matchAll(/\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]),
    ...[...prose.matchAll(/^\s*\[[^\]]+\]:\s*(\S+)/gm)].map((m) => m[1]),
    ...[...prose.matchAll(/<((?:[a-z][a-z0-9+.-]*:|\/\/)[^>\s]*)>/gi)].map((m) => m[1]),
  ]
  for (const target of targets) {
    if (/^([a-z][a-z0-9+.-]*:|\/\/)/i.test(target)) {
      problems.push(`${file}: link outside the repository: ${target}`)
      continue
    }
    const [filePart, anchor] = target.split('#', 2)
    if (filePart === '') {
      if (!anchors(md).has(anchor)) problems.push(`${file}: link to a missing heading: ${target}`)
      continue
    }
    const abs = resolve(dirname(join(ROOT, file)), decodeURI(filePart))
    const rel = relative(ROOT, abs)
    if (rel.startsWith('..') || filePart.startsWith('/')) {
      problems.push(`${file}: link leaves the repository: ${target}`)
    } else if (!existsSync(abs)) {
      problems.push(`${file}: link to a missing file: ${target}`)
    } else if (anchor !== undefined && anchor !== '' && abs.endsWith('.md') && !anchors(readFileSync(abs, 'utf8')).has(anchor)) {
      problems.push(`${file}: link to a missing heading: ${target}`)
    }
  }
  return problems
}

t.test('every config key the loader accepts is in the config reference', async (t) => {
  const doc = read(CONFIG_DOC)
  const paths = keyPaths(CONFIG_KEYS).map((p) => p.path)
  t.ok(paths.includes('timeouts.body') && paths.includes('services.<name>.smoke[].path') && paths.includes('defaults.timeouts'), 'the key tree is walked to the leaves')
  t.strictSame(undocumentedKeys(doc), [], `every accepted key is in ${CONFIG_DOC}`)
  // The check bites: a reference without a key's row, or without a section's mention, fails it.
  t.strictSame(undocumentedKeys(doc.replace(/^\| `timeouts\.body` .*$/m, '')), ['timeouts.body'])
  t.strictSame(undocumentedKeys(doc.replaceAll('`services.<name>.smoke[].bodyContains`', 'bodyContains')), ['services.<name>.smoke[].bodyContains'])
  t.strictSame(undocumentedKeys(doc.replaceAll('`defaults.limits`', 'defaults.limits')), ['defaults.limits'])
})

t.test('the complete example of the config reference loads', async (t) => {
  const doc = read(CONFIG_DOC)
  const example = fences(doc).find((block) => block.startsWith('listen:'))
  t.ok(example, 'the reference has a complete example')
  const config = parseConfig(example ?? '', { env: {} })
  t.equal(config.services.users.timeouts.response, 10_000)
  t.equal(config.services.reports.timeouts.body, 300_000)
})

t.test('every error code is in the admin API reference with its status', async (t) => {
  const doc = read(ADMIN_DOC)
  t.strictSame(undocumentedErrors(doc), [], `every code of ERRORS is in ${ADMIN_DOC}`)
  t.strictSame(undocumentedErrors(doc.replaceAll('`gate_failed`', 'gate_failed')), ['gate_failed'])
  t.strictSame(undocumentedErrors(doc.replaceAll('| 413 | `payload_too_large`', '| 400 | `payload_too_large`')), ['payload_too_large'], 'a wrong status counts as missing')
})

t.test('every route the admin server answers is in the admin API reference', async (t) => {
  const doc = read(ADMIN_DOC)
  const routes = adminRoutes(read('src/admin/server.ts'))
  const paths = routes.map((r) => r.path)
  // Guards the parser: should server.ts change shape, this fails instead of checking nothing.
  for (const p of ['/healthz', '/readyz', '/metrics', '/ui', '/v1/state', '/v1/events', '/v1/flip', '/v1/rollback', '/v1/reload', '/v1/services/{}/flip', '/v1/services/{}/drain', '/v1/services/{}/environments/{}/targets']) {
    t.ok(paths.includes(p), `server.ts is read to find ${p}`)
  }
  t.strictSame(routes.find((r) => r.path === '/ui')?.methods, ['GET', 'HEAD'])
  t.strictSame(undocumentedRoutes(doc, routes), [], `every admin route is in ${ADMIN_DOC}`)
  t.strictSame(undocumentedRoutes(doc.replaceAll('`POST /v1/services/{name}/drain`', 'drain'), routes), ['POST /v1/services/{}/drain'])
  t.strictSame(undocumentedRoutes(doc.replaceAll('`GET /readyz`', 'readyz'), routes), ['ANY /readyz'])
})

t.test('README.md, ARCHITECTURE.md, SECURITY.md, bench/README.md and docs/ link only inside the repository, to files that exist', async (t) => {
  t.ok(LINKED_DOCS.includes(CONFIG_DOC) && LINKED_DOCS.includes(ADMIN_DOC))
  for (const file of LINKED_DOCS) t.strictSame(linkProblems(file, read(file)), [], file)
  const probe = (md: string): string[] => linkProblems('docs/probe.md', md)
  t.equal(probe('see [the spec](../../shared/SPEC.md)').length, 2, 'a link out of the repository')
  t.equal(probe('see [nginx](https://nginx.org/en/docs/)').length, 2, 'a web link')
  t.equal(probe('see https://nginx.org/en/docs/ there').length, 1, 'a bare URL')
  t.equal(probe('see <https://nginx.org>').length, 2, 'an autolink')
  t.equal(probe('```sh\ncurl https://registry.npmjs.org/\n```\n').length, 1, 'a real host in a code block')
  t.equal(probe('[gone](missing.md) and [here](config.md#no-such-heading)').length, 2, 'a missing file or heading')
  t.strictSame(probe('```sh\ncurl http://127.0.0.1:9901/v1/state\n```\n`http://users.example.com` [ok](config.md#services) [top](#x)\n# x\n'), [], 'local and example URLs in code, relative links that resolve')
})
