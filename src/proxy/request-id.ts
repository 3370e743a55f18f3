// Request ids for requests that come without an X-Request-Id: UUID-shaped,
// 64 random bits drawn once per process, then a 64-bit counter. Unique across
// processes and restarts (the random half) and within one (the counter),
// without drawing from the CSPRNG for every request (2 % of the CPU when
// crypto.randomUUID did). Not secret: do not use them as tokens.

import { randomBytes } from 'node:crypto'

const prefix = randomBytes(8).toString('hex')
/** The random half, as `xxxxxxxx-xxxx-xxxx-` (then four counter digits, a dash, twelve more). */
const head = `${prefix.slice(0, 8)}-${prefix.slice(8, 12)}-${prefix.slice(12, 16)}-`
let high = 0
let low = 0

const ZEROS = '000000000000'

export function newRequestId (): string {
  // 48 low bits and 16 high bits of the counter, so it stays an exact integer.
  if (++low === 0x1000000000000) {
    low = 0
    high = (high + 1) & 0xffff
  }
  const l = low.toString(16)
  const h = high.toString(16)
  return `${head}${ZEROS.slice(h.length + 8)}${h}-${ZEROS.slice(l.length)}${l}`
}
