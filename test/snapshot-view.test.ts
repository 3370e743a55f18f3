// Only the controller swaps the routing snapshot: what it hands out is a view with
// no swap, checked by the type checker on a probe file and on the object at run time.

import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import ts from 'typescript'
import { Switcher } from '../src/routing/snapshot.js'
import { admin, serviceYaml, startBackend, startGateway } from './helpers/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..')

/** Type-checks `source` as a file in test/ under the project's compiler options; returns the error codes by line (0-based). */
function typeErrors (source: string): Map<number, number[]> {
  const parsed = ts.getParsedCommandLineOfConfigFile(join(root, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })
  if (parsed === undefined) throw new Error('tsconfig.json did not parse')
  const probe = join(here, 'snapshot-view.probe.ts')
  const host = ts.createCompilerHost(parsed.options)
  const getSourceFile = host.getSourceFile.bind(host)
  host.getSourceFile = (name, version, ...rest) => name === probe ? ts.createSourceFile(name, source, version) : getSourceFile(name, version, ...rest)
  const fileExists = host.fileExists.bind(host)
  host.fileExists = (name) => name === probe || fileExists(name)
  const program = ts.createProgram({ rootNames: [probe], options: { ...parsed.options, noEmit: true, rootDir: root }, host })
  const byLine = new Map<number, number[]>()
  const file = program.getSourceFile(probe)
  for (const d of [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]) {
    const line = d.file === undefined || d.start === undefined ? -1 : d.file.getLineAndCharacterOfPosition(d.start).line
    byLine.set(line, [...byLine.get(line) ?? [], d.code])
  }
  return byLine
}

t.test('the type checker refuses a swap through what the controller hands out', async (t) => {
  const lines = [
    "import type { Controller } from '../src/control/controller.js'",
    "import { Switcher, type Snapshot, type SnapshotView } from '../src/routing/snapshot.js'",
    'declare const controller: Controller',
    'declare const next: Snapshot',
    'const view: SnapshotView = controller.snapshots',
    'export const generation: number = view.current.generation',
    'export const owned = new Switcher(next).swap(next)',
    'controller.snapshots.swap(next)',
    'controller.snapshots.current = next',
    'view.current = next',
    'controller.switcher.swap(next)',
  ]
  const allowed = 6
  const errors = typeErrors(lines.join('\n'))
  for (let i = 0; i <= allowed; i++) t.same(errors.get(i), undefined, `compiles: ${lines[i]}`)
  t.same(errors.get(7), [2339], 'the view has no swap')
  t.same(errors.get(8), [2540], 'the view\'s current is read-only')
  t.same(errors.get(9), [2540], 'so is a SnapshotView\'s')
  t.same(errors.get(10), [2339], 'the controller\'s Switcher is not reachable')
  t.equal(errors.size, 4, 'no other error')
})

t.test('the view handed out at run time cannot swap and follows every commit', async (t) => {
  const [b, g] = await Promise.all(['blue', 'green'].map(async (n) => await startBackend(t, n)))
  const gw = await startGateway(t, `services:\n${serviceYaml('svc', '/', [b], [g])}`)
  const controller = gw.gateway.controller
  const view = controller.snapshots
  t.notOk(view instanceof Switcher, 'not the holder itself')
  t.notOk('swap' in view, 'no swap on it or its prototype')
  t.ok(Object.isFrozen(view), 'frozen: nothing can be added to it')
  const before = view.current
  t.throws(() => { (view as any).current = before }, TypeError, 'current cannot be assigned')
  t.notOk(Object.values(controller).some((v) => v instanceof Switcher), 'no field of the controller exposes the holder')
  t.equal(before.services.get('svc')?.live, 'blue')
  t.equal((await admin(gw.adminUrl, 'POST', '/v1/flip', { services: ['svc'], guard: false })).status, 200)
  t.not(view.current, before, 'the flip swapped a new snapshot in')
  t.equal(view.current.services.get('svc')?.live, 'green')
  t.equal(view.current.generation, before.generation + 1)
})
