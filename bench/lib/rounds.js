// Small number helpers the round-based benches (shadow.js, pinning.js) share.

/** `x` rounded to `d` decimals; null for anything that is not a finite number. */
export const round = (x, d = 1) => x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d

/** `x` with `d` decimals for a table; `-` for null. */
export const fmt = (x, d = 1) => x === null || x === undefined ? '-' : x.toFixed(d)

/** a / b; null when either is missing or b is 0. */
export const ratio = (a, b) => a === null || b === null || b === 0 ? null : a / b

/** The median of the finite numbers in `xs`; null when there are none. */
export const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return null
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/**
 * A case against `off`: the ratios of its medians (req/s, p99, gateway CPU
 * per request) and the paired req/s ratio. `med(name, key)` and
 * `paired(name, key)` are the bench's own (how it pairs runs is its own).
 */
export function ratiosToOff (med, paired, name) {
  return {
    reqPerSec: round(ratio(med(name, 'reqPerSec'), med('off', 'reqPerSec')), 3),
    pairedReqPerSec: round(paired(name, 'reqPerSec'), 3),
    p99: round(ratio(med(name, 'p99Ms'), med('off', 'p99Ms')), 2),
    gatewayCpuUsPerReq: round(ratio(med(name, 'gatewayCpuUsPerReq'), med('off', 'gatewayCpuUsPerReq')), 3),
  }
}
