// No import cycles in src/: none between modules, none between its top-level
// folders (each root file its own node). A cycle is spelled out when one appears.

import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../src')

type Graph = Map<string, Set<string>>

/**
 * Every module specifier a file names: `import` (values or types), `export ... from`,
 * dynamic `import()`, and `import('x').T` in a type. A type-only import is still
 * a dependency: the two modules cannot be understood (or moved) apart.
 */
function specifiersOf (fileName: string, text: string): string[] {
  const found: string[] = []
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier !== undefined && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push(node.moduleSpecifier.text)
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments.length > 0 && ts.isStringLiteralLike(node.arguments[0])) {
      found.push(node.arguments[0].text)
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      found.push(node.argument.literal.text)
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference) && ts.isStringLiteral(node.moduleReference.expression)) {
      found.push(node.moduleReference.expression.text)
    }
    ts.forEachChild(node, visit)
  }
  visit(ts.createSourceFile(fileName, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS))
  return found
}

function listSources (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name)
    if (e.isDirectory()) return listSources(path)
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [path] : []
  })
}

/** src's module graph, keyed by path under src/ ('/' separated); relative imports that name no file are returned apart. */
function buildModuleGraph (): { graph: Graph, unresolved: string[] } {
  const files = listSources(SRC)
  const known = new Set(files)
  const key = (path: string): string => relative(SRC, path).split(sep).join('/')
  const graph: Graph = new Map()
  const unresolved: string[] = []
  for (const file of files) {
    const deps = new Set<string>()
    for (const spec of specifiersOf(file, readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.')) continue
      const target = resolve(dirname(file), spec).replace(/\.js$/, '.ts')
      if (known.has(target)) deps.add(key(target))
      else unresolved.push(`${key(file)} imports ${spec}`)
    }
    graph.set(key(file), deps)
  }
  return { graph, unresolved }
}

/** A module's folder node: its top-level folder under src/, or the root file itself. */
function folderOf (module: string): string {
  const slash = module.indexOf('/')
  return slash === -1 ? module : module.slice(0, slash)
}

/** The folder graph, and for each folder edge one module import that makes it (to name in a failure). */
function buildFolderGraph (modules: Graph): { graph: Graph, witness: Map<string, string> } {
  const graph: Graph = new Map()
  const witness = new Map<string, string>()
  for (const [from, deps] of modules) {
    const a = folderOf(from)
    if (!graph.has(a)) graph.set(a, new Set())
    for (const to of deps) {
      const b = folderOf(to)
      if (a === b) continue
      graph.get(a)?.add(b)
      if (!witness.has(`${a} -> ${b}`)) witness.set(`${a} -> ${b}`, `${from} -> ${to}`)
    }
  }
  return { graph, witness }
}

/**
 * One cycle per strongly connected component that has one (Tarjan), as the
 * path a -> b -> ... -> a, with the component's members, so a tangle of
 * several cycles still shows everything in it.
 */
function findCycles (graph: Graph): Array<{ path: string[], members: string[] }> {
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const components: string[][] = []
  let next = 0
  const connect = (v: string): void => {
    index.set(v, next)
    low.set(v, next)
    next++
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w)
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number))
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number))
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = []
      let w: string
      do {
        w = stack.pop() as string
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      components.push(component)
    }
  }
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) connect(v)

  const cycles: Array<{ path: string[], members: string[] }> = []
  for (const component of components) {
    const members = new Set(component)
    const start = [...members].sort()[0]
    const isSelfLoop = graph.get(start)?.has(start) === true
    if (members.size === 1 && !isSelfLoop) continue
    // Shortest way back to `start` inside the component (breadth first).
    const cameFrom = new Map<string, string>()
    const queue = [start]
    let closing: string | undefined
    while (queue.length > 0 && closing === undefined) {
      const v = queue.shift() as string
      for (const w of [...(graph.get(v) ?? [])].sort()) {
        if (w === start) { closing = v; break }
        if (members.has(w) && !cameFrom.has(w)) {
          cameFrom.set(w, v)
          queue.push(w)
        }
      }
    }
    const path = [start]
    for (let v = closing as string; v !== start; v = cameFrom.get(v) as string) path.splice(1, 0, v)
    path.push(start)
    cycles.push({ path, members: [...members].sort() })
  }
  return cycles.sort((a, b) => a.path[0].localeCompare(b.path[0]))
}

function describe (cycle: { path: string[], members: string[] }, witness?: Map<string, string>): string {
  const steps = cycle.path.slice(1).map((to, i) => {
    const edge = `${cycle.path[i]} -> ${to}`
    return witness === undefined ? edge : `${edge} (${witness.get(edge) ?? '?'})`
  })
  const tangle = cycle.members.length > cycle.path.length - 1 ? `; tangled with: ${cycle.members.join(', ')}` : ''
  return `${witness === undefined ? cycle.path.join(' -> ') : steps.join(', ')}${tangle}`
}

/** Every import between members of a cycle's component: the ones to look at when breaking it. */
function edgesWithin (graph: Graph, cycle: { members: string[] }, witness?: Map<string, string>): string[] {
  const members = new Set(cycle.members)
  return cycle.members.flatMap((from) => [...(graph.get(from) ?? [])].filter((to) => members.has(to)).sort().map((to) => {
    const edge = `${from} -> ${to}`
    return witness === undefined ? edge : `${edge} (${witness.get(edge) ?? '?'})`
  }))
}

function report (graph: Graph, cycles: Array<{ path: string[], members: string[] }>, witness?: Map<string, string>): string {
  return cycles.map((c) => `  ${describe(c, witness)}\n    imports within: ${edgesWithin(graph, c, witness).join('; ')}`).join('\n')
}

t.test('the cycle finder finds what it should (so the checks below can fail)', async (t) => {
  const graph = (edges: Record<string, string[]>): Graph => new Map(Object.entries(edges).map(([k, v]) => [k, new Set(v)]))
  t.same(findCycles(graph({ a: ['b'], b: ['c'], c: [], d: ['a', 'c'] })), [], 'a DAG has none')
  t.same(findCycles(graph({ a: ['b'], b: ['c'], c: ['a'], d: ['a'] })), [{ path: ['a', 'b', 'c', 'a'], members: ['a', 'b', 'c'] }])
  t.same(findCycles(graph({ a: ['a'], b: [] })), [{ path: ['a', 'a'], members: ['a'] }], 'a module importing itself')
  const two = findCycles(graph({ a: ['b'], b: ['a'], c: ['d'], d: ['c', 'e'], e: [] }))
  t.same(two.map((c) => c.path), [['a', 'b', 'a'], ['c', 'd', 'c']], 'separate cycles are each reported')
  const tangled = findCycles(graph({ a: ['b', 'c'], b: ['a'], c: ['a'] }))
  t.equal(tangled.length, 1)
  t.equal(describe(tangled[0]), 'a -> b -> a; tangled with: a, b, c', 'a component with more than the shown cycle names every member')
  t.same(edgesWithin(graph({ a: ['b', 'c', 'z'], b: ['a'], c: ['a'], z: [] }), tangled[0]), ['a -> b', 'a -> c', 'b -> a', 'c -> a'], 'and every import inside it')

  const folders = buildFolderGraph(graph({ 'upstream/registry.ts': ['proxy/h1/pool.ts'], 'proxy/h1/pool.ts': ['upstream/target-set.ts'], 'upstream/target-set.ts': [], 'log.ts': ['errors.ts'], 'errors.ts': [] }))
  const folderCycles = findCycles(folders.graph)
  t.same(folderCycles.map((c) => describe(c, folders.witness)), ['proxy -> upstream (proxy/h1/pool.ts -> upstream/target-set.ts), upstream -> proxy (upstream/registry.ts -> proxy/h1/pool.ts)'],
    'a folder cycle without a module cycle is found, nested folders count as their top-level one, and each step names an import that makes it')
})

t.test('every kind of import is read', async (t) => {
  const text = [
    "import a from './a.js'",
    "import type { B } from './b.js'",
    "import { type C } from './c.js'",
    "export { d } from './d.js'",
    "export type * from './e.js'",
    "import './f.js'",
    "const g = await import('./g.js')",
    "let h: import('./h.js').H",
    "import http from 'node:http'",
  ].join('\n')
  t.same(specifiersOf('x.ts', text), ['./a.js', './b.js', './c.js', './d.js', './e.js', './f.js', './g.js', './h.js', 'node:http'])
})

const { graph: modules, unresolved } = buildModuleGraph()

t.test('every relative import names a file in src/', async (t) => {
  t.ok(modules.size > 20, `read ${modules.size} modules`)
  t.same(unresolved, [], 'an import the graph cannot follow would hide its cycles')
})

t.test('no import cycle between modules', async (t) => {
  const cycles = findCycles(modules)
  t.same(cycles.map((c) => describe(c)), [], `module cycles:\n${report(modules, cycles)}`)
})

t.test('no import cycle between folders (root files are each their own node)', async (t) => {
  const { graph, witness } = buildFolderGraph(modules)
  const cycles = findCycles(graph)
  t.same(cycles.map((c) => describe(c, witness)), [], `folder cycles:\n${report(graph, cycles, witness)}`)
})
