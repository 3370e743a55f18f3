// Summaries of a V8 .cpuprofile (node --cpu-prof): self time per function,
// per file and per package, over a time window.

/** Where a frame's code lives: a package/area and a file label. */
export function locate (callFrame) {
  const { url, functionName } = callFrame
  if (url === '' || url === undefined) {
    if (/^\((idle|program|garbage collector|root)\)$/.test(functionName)) return { area: functionName, file: functionName }
    return { area: 'native (C++ bindings, builtins)', file: '(native)' }
  }
  // undici parses HTTP/1 with llhttp compiled to WebAssembly (node:http uses the C++ llhttp: native).
  if (url.startsWith('wasm://')) return { area: 'undici', file: 'undici llhttp (wasm)' }
  let path = url.replace(/^file:\/\//, '')
  if (path.startsWith('node:')) {
    const p = path.slice(5)
    let area = 'node core: other'
    if (/(^|\/)_?http|http_|^internal\/http/.test(p)) area = 'node core: http'
    else if (/^net$|streams?|stream_base|^internal\/net|^internal\/stream|^buffer$|^internal\/buffer|^events$|^internal\/events/.test(p)) area = 'node core: net, streams, buffers, events'
    else if (/timers|task_queues|async_hooks|process\/|^internal\/util/.test(p)) area = 'node core: timers, ticks, async'
    return { area, file: path }
  }
  const nm = path.lastIndexOf('/node_modules/')
  if (nm !== -1) {
    const rest = path.slice(nm + '/node_modules/'.length)
    const parts = rest.split('/')
    const pkg = parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]
    return { area: pkg, file: rest }
  }
  const dist = path.lastIndexOf('/dist/')
  if (dist !== -1) return { area: 'switchyard (dist/)', file: path.slice(dist + 1) }
  const bench = path.lastIndexOf('/bench/')
  if (bench !== -1) return { area: 'bench harness', file: path.slice(bench + 1) }
  return { area: 'other', file: path }
}

/**
 * Self time (µs) per function, file and area for the samples taken in
 * [fromUs, toUs] (V8 profile clock = CLOCK_MONOTONIC µs, the same clock as
 * process.hrtime in any process on the machine); the whole profile when the
 * window is missing or holds no sample.
 */
export function summarize (profile, { fromUs, toUs, top = 15 } = {}) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  /** The nearest caller in undici, node's http or Switchyard: who a native call (a write) was for. */
  const ownerOf = (id) => {
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) {
      const { area, file } = locate(nodes.get(p).callFrame)
      if (area === 'undici' || area === 'node core: http' || area === 'switchyard (dist/)') return `${area}: ${file}`
    }
    return '(no such caller)'
  }
  const times = []
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0
    times.push(t)
  }
  const weight = (i) => (i + 1 < times.length ? times[i + 1] - times[i] : profile.endTime - times[i])
  let inWindow = (i) => times[i] >= fromUs && times[i] <= toUs
  const windowed = fromUs !== undefined && toUs !== undefined && times.some((_, i) => inWindow(i))
  if (!windowed) inWindow = () => true

  const byFn = new Map()
  const byFile = new Map()
  const byArea = new Map()
  const nativeByOwner = new Map()
  let total = 0
  let idle = 0
  let samples = 0
  const add = (map, key, us, extra) => {
    const e = map.get(key) ?? { ...extra, us: 0 }
    e.us += us
    map.set(key, e)
  }
  for (let i = 0; i < profile.samples.length; i++) {
    if (!inWindow(i)) continue
    const w = Math.max(0, weight(i))
    const node = nodes.get(profile.samples[i])
    const cf = node.callFrame
    samples++
    if (cf.functionName === '(idle)') { idle += w; continue }
    total += w
    const { area, file } = locate(cf)
    const fnKey = `${cf.functionName || '(anonymous)'} ${file}:${cf.lineNumber + 1}`
    add(byFn, fnKey, w, { function: cf.functionName || '(anonymous)', file, line: cf.lineNumber + 1, area })
    add(byFile, file, w, { file, area })
    add(byArea, area, w, { area })
    if (area.startsWith('native')) add(nativeByOwner, `${cf.functionName} <- ${ownerOf(node.id)}`, w, { function: cf.functionName, owner: ownerOf(node.id) })
  }
  const rank = (map) => [...map.values()].sort((a, b) => b.us - a.us).map((e) => ({ ...e, ms: Math.round(e.us / 100) / 10, share: total === 0 ? 0 : e.us / total }))
  return {
    windowed,
    samples,
    busyMs: Math.round(total / 1000),
    idleMs: Math.round(idle / 1000),
    areas: rank(byArea),
    files: rank(byFile).slice(0, top),
    functions: rank(byFn).slice(0, top),
    nativeByOwner: rank(nativeByOwner).slice(0, top),
  }
}

export function printSummary (s, { top = 15 } = {}) {
  const pct = (x) => `${(x * 100).toFixed(1)}%`
  // The last `nums` columns are numbers (right-aligned), the others text.
  const table = (title, head, rows, nums = 2) => {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
    const right = (i) => i >= head.length - nums
    console.log(`\n${title}`)
    console.log('| ' + head.map((h, i) => (right(i) ? h.padStart(widths[i]) : h.padEnd(widths[i]))).join(' | ') + ' |')
    console.log('|' + widths.map((w, i) => (right(i) ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|')
    for (const r of rows) console.log('| ' + r.map((c, i) => (right(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ') + ' |')
  }
  console.log(`${s.samples} samples${s.windowed ? ' in the measured window' : ' (whole profile: no window)'}: ${s.busyMs} ms busy, ${s.idleMs} ms idle on the main thread`)
  table('Self time by area (share of busy main-thread time)', ['area', 'self ms', 'share'], s.areas.map((a) => [a.area, a.ms.toFixed(0), pct(a.share)]))
  table(`Top ${top} files by self time`, ['file', 'area', 'self ms', 'share'], s.files.map((f) => [f.file, f.area, f.ms.toFixed(0), pct(f.share)]))
  table(`Top ${top} functions by self time`, ['function', 'file:line', 'self ms', 'share'], s.functions.map((f) => [f.function, `${f.file}:${f.line}`, f.ms.toFixed(0), pct(f.share)]))
  table('Native time by caller (the nearest frame in undici, node:http or Switchyard)', ['native function', 'called for', 'self ms', 'share'], s.nativeByOwner.slice(0, 10).map((f) => [f.function, f.owner, f.ms.toFixed(0), pct(f.share)]))
}
