// The JSON paths a shadow comparison leaves out (`shadow.ignore.json`): a small
// JSONPath subset, parsed once at config load and matched while a body is walked.
//
// Grammar: `$` then any of `.name`, `['name']` (or "name", JSON-style escapes),
// `[N]`, `[*]`, `.*`, `..name` / `..['name']` (recursive descent). Nothing else:
// filters, slices, unions and negative indices are refused with a message naming
// the character where the path went wrong.

/** One step of a path. */
export type PathSegment =
  | { kind: 'name', name: string }
  | { kind: 'index', index: number }
  | { kind: 'wild' }
  /** `..name`: a member `name` at any depth below (zero or more levels first). */
  | { kind: 'descend', name: string }

export interface JsonPath {
  /** The text it was parsed from. */
  text: string
  segments: PathSegment[]
}

/** A key of a concrete JSON node's path: a member name or an array index. */
export type PathKey = string | number

/** Longest path accepted: a state packs the segment position into 8 bits. */
const MAX_SEGMENTS = 255

function fail (text: string, at: number, what: string): never {
  const where = at >= text.length ? 'at the end' : `at character ${at + 1}`
  throw new Error(`bad JSON path ${JSON.stringify(text)}: ${what} ${where} (supported: $, .name, ['name'], [N], [*], .*, ..name)`)
}

/** Characters a `.name` shorthand may hold; a name with any other needs `['...']`. Non-ASCII letters are taken as they are. */
function isNameStart (c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c === 0x24 || c > 0x7f
}
function isNameChar (c: number): boolean {
  return isNameStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x2d
}

/** Whether `name` can be written `.name` (else `['name']`): the same rule the parser applies, so a written path parses back. */
export function isShorthandName (name: string): boolean {
  if (name.length === 0 || !isNameStart(name.charCodeAt(0))) return false
  for (let i = 1; i < name.length; i++) if (!isNameChar(name.charCodeAt(i))) return false
  return true
}

const ESCAPES: Record<string, string> = { '"': '"', "'": "'", '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }

/** Reads a quoted name starting at the quote `text[i]`; returns the name and the index after the closing quote. */
function readQuoted (text: string, i: number): [string, number] {
  const quote = text[i]
  let out = ''
  let j = i + 1
  while (j < text.length) {
    const c = text[j]
    if (c === quote) return [out, j + 1]
    if (c === '\\') {
      const e = text[j + 1]
      if (e === undefined) break
      if (e === 'u') {
        const hex = text.slice(j + 2, j + 6)
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail(text, j, 'a \\u escape needs four hex digits')
        out += String.fromCharCode(parseInt(hex, 16))
        j += 6
        continue
      }
      const r = ESCAPES[e]
      if (r === undefined) fail(text, j, `unknown escape \\${e} in a quoted name`)
      out += r
      j += 2
      continue
    }
    if (c.charCodeAt(0) < 0x20) fail(text, j, 'a control character in a quoted name (escape it)')
    out += c
    j++
  }
  return fail(text, i, `unterminated quoted name (no closing ${quote})`)
}

/** Reads `.name`'s name at `i`; returns it and the index after it. */
function readName (text: string, i: number): [string, number] {
  if (i >= text.length || !isNameStart(text.charCodeAt(i))) {
    fail(text, i, "expected a name (letters, digits, _, $, -; not starting with a digit) or * after '.'; write other names as ['...']")
  }
  let j = i + 1
  while (j < text.length && isNameChar(text.charCodeAt(j))) j++
  return [text.slice(i, j), j]
}

/**
 * Parses one path of the subset; throws an Error naming what is wrong and
 * where (the config loader prefixes the field: `services.X.shadow.ignore.json[1]: ...`).
 */
export function parseJsonPath (text: string): JsonPath {
  if (typeof text !== 'string') throw new Error(`a JSON path must be a string, got ${text === null ? 'null' : typeof text}`)
  if (text[0] !== '$') fail(text, 0, "a path must start with '$'")
  const segments: PathSegment[] = []
  let i = 1
  while (i < text.length) {
    const c = text[i]
    if (c === '.') {
      if (text[i + 1] === '.') {
        // Recursive descent takes a member name: `..*` and `..[N]` would match nearly every node.
        if (text[i + 2] === '[' && (text[i + 3] === "'" || text[i + 3] === '"')) {
          const [name, end] = readQuoted(text, i + 3)
          if (text[end] !== ']') fail(text, end, "expected ']' after the quoted name")
          segments.push({ kind: 'descend', name })
          i = end + 1
        } else if (text[i + 2] === '*' || text[i + 2] === '[') {
          fail(text, i + 2, "recursive descent '..' takes a name ('..name' or \"..['name']\")")
        } else {
          const [name, end] = readName(text, i + 2)
          segments.push({ kind: 'descend', name })
          i = end
        }
      } else if (text[i + 1] === '*') {
        segments.push({ kind: 'wild' })
        i += 2
      } else {
        const [name, end] = readName(text, i + 1)
        segments.push({ kind: 'name', name })
        i = end
      }
    } else if (c === '[') {
      const d = text[i + 1]
      if (d === "'" || d === '"') {
        const [name, end] = readQuoted(text, i + 1)
        if (text[end] !== ']') fail(text, end, "expected ']' after the quoted name")
        segments.push({ kind: 'name', name })
        i = end + 1
      } else if (d === '*') {
        if (text[i + 2] !== ']') fail(text, i + 2, "expected ']' after '[*'")
        segments.push({ kind: 'wild' })
        i += 3
      } else if (d !== undefined && d >= '0' && d <= '9') {
        let j = i + 1
        while (j < text.length && text[j] >= '0' && text[j] <= '9') j++
        const digits = text.slice(i + 1, j)
        if (digits.length > 1 && digits[0] === '0') fail(text, i + 1, 'an index has no leading zeros')
        if (text[j] !== ']') fail(text, j, "expected ']' after the index (only [N], [*] and ['name'] are supported)")
        const index = Number(digits)
        if (!Number.isSafeInteger(index)) fail(text, i + 1, 'the index is too large')
        segments.push({ kind: 'index', index })
        i = j + 1
      } else if (d === '-') {
        fail(text, i + 1, 'negative indices are not supported')
      } else if (d === '?' || d === ':' || d === '(') {
        fail(text, i + 1, 'filters, slices and script expressions are not supported')
      } else {
        fail(text, i + 1, "expected an index, '*' or a quoted name after '['")
      }
    } else {
      fail(text, i, "expected '.' or '['")
    }
    if (segments.length > MAX_SEGMENTS) fail(text, i, `more than ${MAX_SEGMENTS} steps`)
  }
  return { text, segments }
}

/**
 * The place a walk has reached, relative to every path: which step of which
 * path is next, packed `path << 8 | step`. EMPTY (no path can still match
 * anything below) lets a walk stop asking.
 */
export type MatchState = readonly number[]
const EMPTY: MatchState = Object.freeze([])

/**
 * A compiled set of paths. A walker calls `start()` for the root and
 * `step(parent, key)` for each child; `undefined` means that node is
 * ignored (with everything under it). A state holds at most a few numbers
 * per path, so a step costs a handful of comparisons; with no paths, every
 * state is EMPTY and a step is one length check.
 */
export class PathMatcher {
  readonly paths: readonly JsonPath[]
  private readonly initial: MatchState | undefined

  constructor (paths: ReadonlyArray<string | JsonPath>) {
    this.paths = paths.map((p) => typeof p === 'string' ? parseJsonPath(p) : p)
    const init: number[] = []
    let rootIgnored = false
    this.paths.forEach((p, n) => {
      if (p.segments.length === 0) rootIgnored = true
      init.push(n << 8)
    })
    this.initial = rootIgnored ? undefined : (init.length === 0 ? EMPTY : init)
  }

  /** The root's state; undefined when a path is `$` (the whole body is ignored). */
  start (): MatchState | undefined {
    return this.initial
  }

  /** The state of child `key` of a node in `state`; undefined when that child is ignored. */
  step (state: MatchState, key: PathKey): MatchState | undefined {
    if (state.length === 0) return EMPTY
    let next: number[] | undefined
    for (let k = 0; k < state.length; k++) {
      const packed = state[k]
      const n = packed >> 8
      const at = packed & 0xff
      const segments = this.paths[n].segments
      const seg = segments[at]
      let advance = false
      switch (seg.kind) {
        case 'name': advance = key === seg.name; break
        case 'index': advance = key === seg.index; break
        case 'wild': advance = true; break
        case 'descend':
          // Still looking further down, and maybe found here.
          next = add(next, packed)
          advance = key === seg.name
          break
      }
      if (advance) {
        if (at + 1 === segments.length) return undefined
        next = add(next, packed + 1)
      }
    }
    return next ?? EMPTY
  }

  /** Whether the node at `path` (member names and array indices from the root) is ignored, itself or by an ancestor. */
  ignores (path: readonly PathKey[]): boolean {
    let state = this.start()
    for (let i = 0; state !== undefined && i < path.length; i++) state = this.step(state, path[i])
    return state === undefined
  }
}

function add (list: number[] | undefined, v: number): number[] {
  if (list === undefined) return [v]
  if (!list.includes(v)) list.push(v)
  return list
}

/** Compiles `paths` (text or parsed); throws like parseJsonPath on a bad one. */
export function compileJsonPaths (paths: ReadonlyArray<string | JsonPath>): PathMatcher {
  return new PathMatcher(paths)
}

/** Whether `matcher` ignores the node at `path`. */
export function isIgnored (matcher: PathMatcher, path: readonly PathKey[]): boolean {
  return matcher.ignores(path)
}

/** Writes a concrete path the way a Difference names it: member names as `.name` or `['name']`, every index as `[*]`. */
export function formatPath (path: readonly PathKey[]): string {
  let out = '$'
  for (const key of path) {
    if (typeof key === 'number') out += '[*]'
    else if (isShorthandName(key)) out += '.' + key
    else out += `['${escapeName(key)}']`
  }
  return out
}

function escapeName (name: string): string {
  let out = ''
  for (const c of name) {
    const code = c.charCodeAt(0)
    if (c === "'" || c === '\\') out += '\\' + c
    else if (code < 0x20 || code === 0x7f) out += '\\u' + code.toString(16).padStart(4, '0')
    else out += c
  }
  return out
}
