#!/usr/bin/env node
// Entry point of the `switchyard` command: argv and signals in, exit code out.

import { run } from './commands.js'
import { flushLogs } from './log.js'

const stopSignal = new Promise<string>((resolve) => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      resolve(sig)
      // A second signal means "now".
      process.once(sig, () => {
        flushLogs()
        process.exit(130)
      })
    })
  }
})

const code = await run(process.argv.slice(2), {
  out: (text) => { process.stdout.write(text + '\n') },
  err: (text) => { process.stderr.write(text + '\n') },
  env: process.env,
  stopSignal,
  onReload: (fn) => { process.on('SIGHUP', fn) },
  write: (text) => { process.stdout.write(text) },
  tty: process.stdout.isTTY,
})
flushLogs()
process.exitCode = code
