// The shadow comparison unit by unit: every kind of place a difference is
// named by, JSON compared structurally, the ignore path subset and its errors,
// redacted and cut examples, the per-pair cap, and the header map the taps build.

import t from 'tap'
import { brotliCompressSync, gzipSync } from 'node:zlib'
import { answerHeaders, createComparer, isJsonType, MAX_DIFFERENCES } from '../src/shadow/compare.js'
import { compileJsonPaths, formatPath, isIgnored, parseJsonPath } from '../src/config/json-path.js'
import type { Answer, Difference } from '../src/shadow/types.js'

const JSON_TYPE = 'application/json'

function answer (status: number, headers: Record<string, string>, body?: string | Buffer): Answer {
  return {
    status,
    headers: new Map(Object.entries(headers)),
    body: body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body),
  }
}

function json (value: unknown, headers: Record<string, string> = {}, status = 200): Answer {
  return answer(status, { 'content-type': JSON_TYPE, ...headers }, JSON.stringify(value))
}

function wheres (diffs: Difference[]): string[] {
  return diffs.map((d) => d.where)
}

const plain = createComparer({ headers: [], json: [] })

t.test('every kind of place', async (t) => {
  t.same(plain.compare(json({ a: 1 }), json({ a: 1 })), [], 'equal answers: no differences')
  t.same(plain.compare(json({}, {}, 200), json({}, {}, 503)), [{ where: 'status', live: '200', other: '503' }])
  t.same(plain.compare(json({}, { 'x-version': '1' }), json({}, { 'x-version': '2' })), [{ where: 'header:x-version', live: '1', other: '2' }])
  t.same(plain.compare(json({}, { 'x-only-live': 'a' }), json({})), [{ where: 'header:x-only-live', live: 'a', other: '(absent)' }])
  t.same(plain.compare(json({}), json({}, { 'x-only-idle': 'b' })), [{ where: 'header:x-only-idle', live: '(absent)', other: 'b' }])
  const bytes = plain.compare(answer(200, { 'content-type': 'text/plain' }, 'hello world'), answer(200, { 'content-type': 'text/plain' }, 'hello there'))
  t.same(wheres(bytes), ['body'], 'text bodies compare by bytes')
  const type = plain.compare(json({ a: 1 }), answer(200, { 'content-type': 'text/html' }, '<p>1</p>'))
  t.same(wheres(type), ['header:content-type', 'body:type'])
  t.same(type[1], { where: 'body:type', live: JSON_TYPE, other: 'text/html' })
  t.same(plain.compare(json({ user: { name: 'ann' } }), json({ user: { name: 'bob' } })), [{ where: '$.user.name', live: '"ann"', other: '"bob"' }])
  t.same(wheres(plain.compare(json({ items: [{ price: 1 }, { price: 2 }] }), json({ items: [{ price: 1 }, { price: 3 }] }))), ['$.items[*].price'])
  t.same(wheres(plain.compare(json({ items: [1, 2] }), json({ items: [1, 2, 3] }))), ['$.items'], 'a length difference names the array')
  t.same(plain.compare(json(1), json(2)), [{ where: '$', live: '1', other: '2' }], 'the root')
  t.same(wheres(plain.compare(json({}), json([]))), ['$'], 'root kinds differ')
  t.same(plain.compare(json({ a: 1 }), json({ a: 1, b: null })), [{ where: '$.b', live: '(absent)', other: 'null' }], 'a member on one side only')
  t.same(plain.compare(json({ a: 1, b: [true] }), json({ a: 1 })), [{ where: '$.b', live: '[true]', other: '(absent)' }])
  t.same(wheres(plain.compare(json({ 'odd key': 1, "it's": 2 }), json({ 'odd key': 3, "it's": 4 }))), ["$['odd key']", "$['it\\'s']"], 'names that need brackets')
  t.same(plain.compare(json({ a: 1 }, {}, 201), json({ a: 2 }, {}, 200)).map((d) => d.where), ['status', '$.a'], 'status, then headers, then body')
})

t.test('the same place at several indices counts once', async (t) => {
  const diffs = plain.compare(json({ items: [{ p: 1 }, { p: 2 }, { p: 3 }] }), json({ items: [{ p: 9 }, { p: 8 }, { p: 3 }] }))
  t.same(diffs, [{ where: '$.items[*].p', live: '1', other: '9' }], 'first example kept')
})

t.test('JSON object key order is ignored', async (t) => {
  const a = answer(200, { 'content-type': JSON_TYPE }, '{"a":1,"b":{"x":[1,2],"y":"z"},"c":null}')
  const b = answer(200, { 'content-type': JSON_TYPE }, '{ "c": null, "b": { "y": "z", "x": [1, 2] }, "a": 1 }')
  t.same(plain.compare(a, b), [])
  t.same(plain.compare(b, a), [])
})

t.test('numbers compare by value', async (t) => {
  const a = answer(200, { 'content-type': JSON_TYPE }, '{"n":1,"m":100,"f":0.5,"z":0}')
  const b = answer(200, { 'content-type': JSON_TYPE }, '{"n":1.0,"m":1e2,"f":5E-1,"z":-0}')
  t.same(plain.compare(a, b), [], '1 and 1.0, 100 and 1e2, 0 and -0')
  t.same(plain.compare(json({ n: 1 }), json({ n: '1' })), [{ where: '$.n', live: '1', other: '"1"' }], 'a number and a string differ')
  t.same(plain.compare(json({ n: 0 }), json({ n: false })), [{ where: '$.n', live: '0', other: 'false' }])
  t.same(plain.compare(json({ n: null }), json({ n: {} })), [{ where: '$.n', live: 'null', other: '{}' }])
})

t.test('arrays compare by index, then length', async (t) => {
  t.same(plain.compare(json([1, 2, 3]), json([1, 2, 4, 5])), [
    { where: '$', live: 'length 3: [1,2,3]', other: 'length 4: [1,2,4,5]' },
    { where: '$[*]', live: '3', other: '4' },
  ], 'the length, then the common prefix')
  t.same(plain.compare(json([1, 2]), json([2, 1])), [{ where: '$[*]', live: '1', other: '2' }], 'order matters in arrays')
  t.same(plain.compare(json({ a: [[1], [2]] }), json({ a: [[1], [2, 3]] })), [{ where: '$.a[*]', live: 'length 1: [2]', other: 'length 2: [2,3]' }])
})

t.test('ignored JSON paths, each syntax', async (t) => {
  const live = {
    timestamp: 1,
    'x-id': 'a',
    "it's": 'q',
    user: { name: 'ann', requestId: 'r1', meta: { requestId: 'r2', keep: 1 } },
    items: [{ id: 1, price: 5 }, { id: 2, price: 6 }],
    tags: { a: 1, b: 2 },
    list: [{ requestId: 'r3' }],
  }
  const idle = {
    timestamp: 2,
    'x-id': 'b',
    "it's": 'r',
    user: { name: 'bob', requestId: 'R1', meta: { requestId: 'R2', keep: 2 } },
    items: [{ id: 10, price: 7 }, { id: 20, price: 6 }],
    tags: { a: 3, b: 4, c: 5 },
    list: [{ requestId: 'R3' }],
  }
  const all = wheres(plain.compare(json(live), json(idle)))
  t.same(all, ['$.timestamp', '$.x-id', "$['it\\'s']", '$.user.name', '$.user.requestId', '$.user.meta.requestId', '$.user.meta.keep',
    '$.items[*].id', '$.items[*].price', '$.tags.a', '$.tags.b', '$.tags.c', '$.list[*].requestId'], 'nothing ignored')
  const cases: Array<[string[], string[]]> = [
    [['$.timestamp'], ['$.timestamp']],
    [["$['x-id']"], ['$.x-id']],
    [['$["x-id"]'], ['$.x-id']],
    [["$['it\\'s']"], ["$['it\\'s']"]],
    [['$["it\\u0027s"]'], ["$['it\\'s']"]],
    [['$.user'], ['$.user.name', '$.user.requestId', '$.user.meta.requestId', '$.user.meta.keep']],
    [['$.user.meta'], ['$.user.meta.requestId', '$.user.meta.keep']],
    [['$.items[*].id'], ['$.items[*].id']],
    [['$.items[*]'], ['$.items[*].id', '$.items[*].price']],
    [['$.tags.*'], ['$.tags.a', '$.tags.b', '$.tags.c']],
    [['$..requestId'], ['$.user.requestId', '$.user.meta.requestId', '$.list[*].requestId']],
    [["$..['requestId']"], ['$.user.requestId', '$.user.meta.requestId', '$.list[*].requestId']],
    [['$.user..requestId'], ['$.user.requestId', '$.user.meta.requestId']],
    [['$..meta.requestId'], ['$.user.meta.requestId']],
    [['$.*.name'], ['$.user.name']],
    [['$.timestamp', '$.user', '$.tags'], ['$.timestamp', '$.user.name', '$.user.requestId', '$.user.meta.requestId', '$.user.meta.keep', '$.tags.a', '$.tags.b', '$.tags.c']],
  ]
  for (const [paths, gone] of cases) {
    const got = wheres(createComparer({ headers: [], json: paths }).compare(json(live), json(idle)))
    t.same(got, all.filter((w) => !gone.includes(w)), `ignore ${paths.join(', ')}`)
  }

  // [N] ignores that index only: the other index still differs (and is still written [*]).
  const byIndex = createComparer({ headers: [], json: ['$.items[0].id'] })
  t.same(byIndex.compare(json({ items: [{ id: 1 }, { id: 2 }] }), json({ items: [{ id: 9 }, { id: 2 }] })), [])
  t.same(byIndex.compare(json({ items: [{ id: 1 }, { id: 2 }] }), json({ items: [{ id: 1 }, { id: 3 }] })), [{ where: '$.items[*].id', live: '2', other: '3' }])
  t.same(wheres(createComparer({ headers: [], json: ['$.items[1]'] }).compare(json({ items: [1, 2, 3] }), json({ items: [1, 5, 3, 4] }))), ['$.items'],
    'an ignored element does not hide its array\'s length')

  const root = createComparer({ headers: [], json: ['$'] })
  t.same(wheres(root.compare(json({ a: 1 }, {}, 200), json({ a: 2 }, {}, 500))), ['status'], '$ ignores the whole body, not the rest of the answer')
  t.same(wheres(createComparer({ headers: [], json: ['$.a'] }).compare(json({ a: 1 }), json({ b: 1 }))), ['$.b'], 'an ignored member absent on one side is no difference')
})

t.test('isIgnored on concrete paths', async (t) => {
  const m = compileJsonPaths(['$.a.b', '$.list[2]', '$.any[*].x', '$.obj.*', '$..deep', "$['we.ird']"])
  const yes: Array<Array<string | number>> = [['a', 'b'], ['a', 'b', 'c', 0], ['list', 2], ['list', 2, 'q'], ['any', 0, 'x'], ['any', 7, 'x', 'y'],
    ['obj', 'k'], ['obj', 3], ['deep'], ['z', 0, 'y', 'deep'], ['we.ird']]
  const no: Array<Array<string | number>> = [[], ['a'], ['a', 'c'], ['list'], ['list', 1], ['list', '2'], ['any', 0], ['any', 0, 'y'], ['obj'],
    ['deeper'], ['z', 'de'], ['we'], ['we', 'ird'], ['b', 'a']]
  for (const p of yes) t.ok(isIgnored(m, p), `ignores ${JSON.stringify(p)}`)
  for (const p of no) t.notOk(isIgnored(m, p), `keeps ${JSON.stringify(p)}`)
  t.ok(isIgnored(compileJsonPaths(['$']), []), '$ ignores the root')
  t.notOk(isIgnored(compileJsonPaths([]), ['a']), 'no paths ignore nothing')
})

t.test('a place written by a difference parses back and ignores itself', async (t) => {
  const names = ['plain', 'with space', "qu'ote", 'back\\slash', 'new\nline', '9lives', 'ünïcode', 'a-b', '$ref', '']
  for (const name of names) {
    const where = formatPath(['x', 3, name])
    const m = compileJsonPaths([where])
    t.ok(isIgnored(m, ['x', 0, name]), `${where} parses and matches ${JSON.stringify(name)}`)
    t.notOk(isIgnored(m, ['x', 0, name + '_']), `${where} matches only that name`)
  }
})

t.test('a bad path is refused with what and where', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['', /must start with '\$' at the end/],
    ['a.b', /must start with '\$' at character 1/],
    ['$.', /expected a name .* at the end/],
    ['$.a..', /expected a name .* at the end/],
    ['$.a b', /expected '\.' or '\[' at character 4/],
    ['$a', /expected '\.' or '\[' at character 2/],
    ['$[-1]', /negative indices are not supported at character 3/],
    ['$[?(@.a)]', /filters, slices and script expressions are not supported at character 3/],
    ['$[1:2]', /expected '\]' after the index .* at character 4/],
    ['$[0,1]', /expected '\]' after the index .* at character 4/],
    ['$[01]', /no leading zeros at character 3/],
    ['$[x]', /expected an index, '\*' or a quoted name after '\[' at character 3/],
    ['$[', /expected an index, .* at the end/],
    ["$['abc", /unterminated quoted name \(no closing '\) at character 3/],
    ["$['a'", /expected '\]' after the quoted name at the end/],
    ["$['a\\q']", /unknown escape \\q in a quoted name at character 5/],
    ['$["\\u12"]', /four hex digits at character 4/],
    ['$[*', /expected '\]' after '\[\*' at the end/],
    ['$..*', /recursive descent '\.\.' takes a name .* at character 4/],
    ['$..[0]', /recursive descent '\.\.' takes a name .* at character 4/],
    ['$.1abc', /expected a name .* at character 3/],
    ['$.a[*]x', /expected '\.' or '\[' at character 7/],
  ]
  for (const [text, message] of bad) {
    t.throws(() => parseJsonPath(text), { message }, JSON.stringify(text))
    t.throws(() => parseJsonPath(text), { message: new RegExp(`^bad JSON path ${escapeRe(JSON.stringify(text))}: `) }, 'the message quotes the path')
  }
  t.throws(() => createComparer({ headers: [], json: ['$.ok', '$[-1]'] }), { message: /negative indices/ }, 'the comparer refuses it too')
  t.same(parseJsonPath("$.a['b'][3][*].*..c").segments, [
    { kind: 'name', name: 'a' }, { kind: 'name', name: 'b' }, { kind: 'index', index: 3 }, { kind: 'wild' }, { kind: 'wild' }, { kind: 'descend', name: 'c' },
  ])
})

function escapeRe (s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

t.test('headers: left out always, ignored by name, redacted in examples', async (t) => {
  const live = answer(200, { date: 'Mon', 'content-length': '5', 'transfer-encoding': 'chunked', connection: 'close', 'keep-alive': 'timeout=5', 'x-request-id': 'a' })
  const idle = answer(200, { date: 'Tue', 'content-length': '6', 'x-request-id': 'b', 'keep-alive': 'timeout=9', upgrade: 'h2c' })
  t.same(wheres(plain.compare(live, idle)), ['header:x-request-id'], 'date, framing and hop-by-hop are never compared')
  t.same(createComparer({ headers: ['X-Request-Id'], json: [] }).compare(live, idle), [], 'ignore.headers, any case')

  const secrets = answer(200, { 'set-cookie': 'sid=live-secret', authorization: 'Bearer live', cookie: 'a=1', 'www-authenticate': 'Basic realm=x', 'x-plain': 'shown' })
  const others = answer(200, { 'set-cookie': 'sid=idle-secret', authorization: 'Bearer idle', cookie: 'a=2', 'x-plain': 'other' })
  const diffs = plain.compare(secrets, others)
  t.same(diffs, [
    { where: 'header:authorization', live: '[redacted]', other: '[redacted]' },
    { where: 'header:cookie', live: '[redacted]', other: '[redacted]' },
    { where: 'header:set-cookie', live: '[redacted]', other: '[redacted]' },
    { where: 'header:www-authenticate', live: '[redacted]', other: '(absent)' },
    { where: 'header:x-plain', live: 'shown', other: 'other' },
  ])
  t.notMatch(JSON.stringify(diffs), /secret|Bearer|Basic/, 'no credential in any example')
  const long = plain.compare(answer(200, { 'x-long': 'v'.repeat(500) }), answer(200, {}))
  t.equal(long[0].live.length, 120, 'a long header value is cut at 120')
  t.ok(long[0].live.endsWith('...'))
})

t.test('byte bodies: the first differing offset with bytes around it', async (t) => {
  const head = 'a'.repeat(100)
  const diffs = plain.compare(answer(200, {}, head + 'LIVE' + 'z'.repeat(100)), answer(200, {}, head + 'IDLE' + 'z'.repeat(100)))
  t.same(diffs, [{
    where: 'body',
    live: `at byte 100 of 204: ...${'a'.repeat(20)}LIVE${'z'.repeat(36)}...`,
    other: `at byte 100 of 204: ...${'a'.repeat(20)}IDLE${'z'.repeat(36)}...`,
  }])
  const early = plain.compare(answer(200, {}, 'ab\x00\r\n\\c'), answer(200, {}, 'ab\x01'))
  t.same(early, [{ where: 'body', live: 'at byte 2 of 7: ab\\x00\\r\\n\\\\c', other: 'at byte 2 of 3: ab\\x01' }], 'non-printable bytes escaped')
  const prefix = plain.compare(answer(200, {}, 'x'.repeat(10)), answer(200, {}, 'x'.repeat(100)))
  t.same(prefix, [{ where: 'body', live: 'at byte 10 of 10: xxxxxxxxxx', other: `at byte 10 of 100: ${'x'.repeat(60)}...` }], 'one body a prefix of the other')
  const tail = plain.compare(answer(200, {}, 'y'.repeat(200)), answer(200, {}, 'y'.repeat(199) + 'Y'))
  t.equal(tail[0].other, `at byte 199 of 200: ...${'y'.repeat(59)}Y`, 'near the end, the window ends with the body')
  t.same(plain.compare(answer(200, {}, Buffer.from([1, 2, 3])), answer(200, {}, Buffer.from([1, 2, 3]))), [], 'equal bytes')
})

t.test('which bodies are JSON', async (t) => {
  t.ok(isJsonType('application/json'))
  t.ok(isJsonType('Application/JSON; charset=utf-8'))
  t.ok(isJsonType('application/problem+json'))
  t.ok(isJsonType('application/vnd.api+json;v=2'))
  t.notOk(isJsonType('text/plain'))
  t.notOk(isJsonType('application/jsonx'))
  t.notOk(isJsonType('+json'))
  t.notOk(isJsonType(undefined))
  const problem = answer(200, { 'content-type': 'application/problem+json' }, '{"a":1,"b":2}')
  t.same(plain.compare(problem, answer(200, { 'content-type': 'application/problem+json' }, '{"b":2,"a":1}')), [], '+json compared structurally')
  const broken = plain.compare(answer(200, { 'content-type': JSON_TYPE }, '{"a":1}'), answer(200, { 'content-type': JSON_TYPE }, '{"a":1'))
  t.same(wheres(broken), ['body'], 'JSON that does not parse is compared by bytes')
  t.same(plain.compare(answer(200, { 'content-type': JSON_TYPE }, undefined), answer(200, { 'content-type': JSON_TYPE }, undefined)), [], 'bodies above maxBody are not compared')
  t.same(wheres(plain.compare(json({ a: 1 }), answer(200, { 'content-type': JSON_TYPE }, undefined))), ['body'], 'one body kept, the other above maxBody: they differ (see shadow-attacks)')
  t.same(wheres(plain.compare(answer(200, { 'content-type': 'text/plain' }, 'same'), answer(200, { 'content-type': JSON_TYPE }, 'same'))), ['header:content-type'],
    'equal bytes are no body difference whatever the types say')
})

t.test('at most 50 differences per pair', async (t) => {
  const a: Record<string, number> = {}
  const b: Record<string, number> = {}
  for (let i = 0; i < 80; i++) {
    a[`k${i}`] = i
    b[`k${i}`] = i + 1
  }
  const diffs = plain.compare(json(a), json(b))
  t.equal(diffs.length, MAX_DIFFERENCES)
  t.equal(diffs[MAX_DIFFERENCES - 2].where, '$.k48')
  t.equal(diffs[MAX_DIFFERENCES - 1].where, '...', 'the cut is noted')
  const fifty: Record<string, number> = {}
  for (let i = 0; i < 50; i++) fifty[`k${i}`] = i + 1
  const exact = plain.compare(json(Object.fromEntries(Object.keys(fifty).map((k) => [k, 0]))), json(fifty))
  t.equal(exact.length, 50, 'exactly 50 stay whole')
  t.notOk(exact.some((d) => d.where === '...'))
  const longName = 'n'.repeat(300)
  const w = plain.compare(json({ [longName]: 1 }), json({ [longName]: 2 }))[0].where
  t.equal(w.length, 200, 'a where is cut at 200 characters')
  const big = plain.compare(json({ v: 'x'.repeat(1000) }), json({ v: 'y' }))[0]
  t.equal(big.live.length, 120, 'a JSON example is cut at 120 characters')
})

t.test('JSON nested deeper than the walk goes is compared as bytes, never thrown', async (t) => {
  const deep = (n: number, leaf: string): string => '['.repeat(n) + leaf + ']'.repeat(n)
  const diffs = plain.compare(answer(200, { 'content-type': JSON_TYPE }, deep(20000, '1')), answer(200, { 'content-type': JSON_TYPE }, deep(20000, '2')))
  t.same(wheres(diffs), ['body'])
  t.equal(diffs[0].live, 'at byte 20000 of 40001 (a JSON body: not shown)', 'where, and no byte of a body that says it is JSON')
})

t.test('a 60 KiB JSON body', async (t) => {
  const items = []
  for (let i = 0; i < 600; i++) items.push({ id: i, name: `item number ${i}`, price: i * 1.5, tags: ['a', 'b', 'c'], stock: { warehouse: i % 7, shelf: `s${i}` } })
  const live = { timestamp: 1700000000000, requestId: 'live', items }
  const idleItems = items.map((item) => ({ ...item, stock: { ...item.stock } }))
  idleItems[3] = { ...idleItems[3], price: 99 }
  idleItems[500].stock.shelf = 'moved'
  idleItems.reverse()
  idleItems.reverse()
  const idle = { requestId: 'idle', items: idleItems, timestamp: 1700000000999 }
  const bodyLength = JSON.stringify(live).length
  t.ok(bodyLength > 60 * 1024 && bodyLength < 70 * 1024, `body is ${bodyLength} bytes`)
  const comparer = createComparer({ headers: [], json: ['$.timestamp', '$..requestId'] })
  t.same(comparer.compare(json(live), json(idle)), [
    { where: '$.items[*].price', live: '4.5', other: '99' },
    { where: '$.items[*].stock.shelf', live: '"s500"', other: '"moved"' },
  ])
  t.same(comparer.compare(json(live), json({ ...live, items: [...items] })), [], 'equal apart from ignored places')
})

t.test('answerHeaders from either head form', async (t) => {
  const lines = answerHeaders('Content-Type: application/json\r\nSet-Cookie: a=1\r\nX-Empty:\r\nset-cookie:  b=2 \r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nbogus line\r\nX-Last: z')
  t.same([...lines], [['content-type', 'application/json'], ['set-cookie', 'a=1, b=2'], ['x-empty', ''], ['x-last', 'z']])
  const flat = answerHeaders(['Content-Type', 'text/plain', Buffer.from('X-Tag'), Buffer.from('one'), 'x-tag', 'two', 'Keep-Alive', 'timeout=5'])
  t.same([...flat], [['content-type', 'text/plain'], ['x-tag', 'one, two']])
  t.same([...answerHeaders('')], [])
  t.same([...answerHeaders([])], [])
  const a: Answer = { status: 200, headers: answerHeaders('X-A: 1\r\nX-A: 2\r\n'), body: undefined }
  const b: Answer = { status: 200, headers: answerHeaders(['x-a', '1', 'X-A', '2']), body: undefined }
  t.same(plain.compare(a, b), [], 'both forms give the same map')
})

t.test('compressed bodies are compared decoded', async (t) => {
  const gz = (v: unknown): Buffer => gzipSync(JSON.stringify(v), { level: 1 })
  const headers = { 'content-type': JSON_TYPE, 'content-encoding': 'gzip' }
  // Two compressions of bodies that differ in one field differ in many bytes: the place is still the field.
  const diffs = plain.compare(answer(200, headers, gz({ plan: 'a', id: 7 })), answer(200, headers, gz({ plan: 'b', id: 7 })))
  t.same(wheres(diffs), ['$.plan'])
  t.same(plain.compare(answer(200, headers, gz({ id: 7, plan: 'a' })), answer(200, headers, gz({ plan: 'a', id: 7 }))), [], 'equal once decoded')
  // One side br, the other plain: the bodies are equal; only the coding header differs.
  const br = answer(200, { 'content-type': JSON_TYPE, 'content-encoding': 'br' }, brotliCompressSync(JSON.stringify({ id: 7 })))
  t.same(wheres(plain.compare(json({ id: 7 }), br)), ['header:content-encoding'])
  // A body that does not decode is compared as sent.
  const broken = plain.compare(answer(200, headers, Buffer.from('not gzip')), answer(200, headers, Buffer.from('not gzip!')))
  t.same(wheres(broken), ['body'])
})

t.test('JSON secrets: counted where they differ, never shown, at any depth and under a secret member', async (t) => {
  const json = { 'content-type': 'application/json' }
  const live = answer(200, json, JSON.stringify({
    user: { name: 'ann', password: 'hunter2', apiKey: 'k-live' },
    session: { id: 's1', user: 'ann' },
    items: [{ csrf_token: 'a1', n: 1 }],
    email: 'ann@example.com',
    tokens: 3,
    gone: { secret: 'x', keep: 1 },
  }))
  const idle = answer(200, json, JSON.stringify({
    user: { name: 'ann', password: 'hunter3', apiKey: 'k-idle' },
    session: { id: 's2', user: 'bob' },
    items: [{ csrf_token: 'b2', n: 2 }],
    email: 'ann@example.org',
    tokens: 4,
    added: { Client_Secret: 'y', keep: 2 },
  }))
  const plain = createComparer({ headers: [], json: [] }).compare(live, idle)
  t.same(plain, [
    { where: '$.user.password', live: '[redacted]', other: '[redacted]' },
    { where: '$.user.apiKey', live: '[redacted]', other: '[redacted]' },
    { where: '$.session', live: '[redacted]', other: '[redacted]' },
    { where: '$.items[*].csrf_token', live: '[redacted]', other: '[redacted]' },
    { where: '$.items[*].n', live: '1', other: '2' },
    { where: '$.email', live: '"ann@example.com"', other: '"ann@example.org"' },
    { where: '$.tokens', live: '[redacted]', other: '[redacted]' },
    { where: '$.gone', live: '{"secret":"[redacted]","keep":1}', other: '(absent)' },
    { where: '$.added', live: '(absent)', other: '{"Client_Secret":"[redacted]","keep":2}' },
  ], 'every place named and counted (once per secret member, however much differs under it); no secret value in any example')
  const text = JSON.stringify(plain)
  for (const v of ['hunter', 'k-live', 'k-idle', 's1', 's2', 'bob', 'a1', 'b2', '"x"', '"y"']) t.notOk(text.includes(v), `${v} is not shown`)
  const mine = createComparer({ headers: [], json: [] }, ['E-Mail']).compare(live, idle)
  t.same(mine.find((d) => d.where === '$.email'), { where: '$.email', live: '[redacted]', other: '[redacted]' }, 'redact adds names of the service\'s own (case, - and _ aside)')
  const arrays = createComparer({ headers: [], json: [] }).compare(
    answer(200, json, JSON.stringify({ token: [1, 2], list: [{ secret: 1 }] })),
    answer(200, json, JSON.stringify({ token: [1], list: [] })))
  t.same(arrays, [
    { where: '$.token', live: '[redacted]', other: '[redacted]' },
    { where: '$.list', live: 'length 1: [{"secret":"[redacted]"}]', other: 'length 0: []' },
  ], 'an array under a secret name shows nothing of itself; secrets inside an array element are redacted')
})
