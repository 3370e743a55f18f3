// Which Node runs the suite. .ci/run sets SWITCHYARD_CI_NODE to the major it
// means to test (20, 22, 24): a PATH mistake would otherwise test one Node three times.

import t from 'tap'
import { execFileSync } from 'node:child_process'

const want = process.env.SWITCHYARD_CI_NODE

t.test('tap runs the tests on the Node major CI asked for', { skip: want === undefined ? 'SWITCHYARD_CI_NODE is set by .ci/run only' : false }, async (t) => {
  t.comment(`node ${process.version} at ${process.execPath}`)
  t.equal(process.version.split('.')[0], `v${want as string}`)
  // The CLI tests spawn process.execPath, and `node` on PATH is what tap itself found.
  t.equal(execFileSync('node', ['--version'], { encoding: 'utf8' }).trim(), process.version, '`node` on PATH is the same binary')
})
