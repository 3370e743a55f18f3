// The gate a flip passes before its colors go live: enough healthy targets and a
// shadow comparison that does not differ too much (taken in the controller's
// queue) and every smoke check passing (run outside it); and readiness.

import type { Color, Config } from '../config/schema.js'
import { SwitchyardError } from '../errors.js'
import type { Prober } from '../health/prober.js'
import type { SmokeFailure, SmokeRunner } from '../health/smoke.js'
import type { Snapshot } from '../routing/snapshot.js'
import type { ShadowView } from '../shadow/types.js'
import type { ColorChange } from '../state/events.js'

/** Why the gate refused one service's flip. */
export interface GateFailure {
  service: string
  color: Color
  reason: string
  healthy?: number
  minHealthy?: number
  targets?: Array<Record<string, unknown>>
  smoke?: SmokeFailure[]
  /** The shadow comparison that refused it. */
  shadow?: ShadowView
  /** Not a refusal yet: shadow traffic is on but fewer than gate.minShadowCompared pairs were compared (a release's testing phase waits for them). */
  pending?: true
}

/** The refusal of a flip, its failures in the order of the flip's changes. */
export function gateFailed (failures: GateFailure[], changes: readonly ColorChange[]): SwitchyardError {
  const order = changes.map((c) => c.service)
  const sorted = [...failures].sort((a, b) => order.indexOf(a.service) - order.indexOf(b.service))
  return new SwitchyardError('gate_failed', `flip refused: ${sorted.map((f) => `${f.service}/${f.color}: ${f.reason}`).join('; ')}`, { failures: sorted })
}

/**
 * The first half of the gate, taken in the queue: enough healthy targets in
 * each new color. Returns its failures, and the changes that passed and still
 * have smoke checks to run.
 */
export function checkHealthGate (config: Config, snapshot: Snapshot, changes: readonly ColorChange[]): { failures: GateFailure[], smoke: ColorChange[] } {
  const failures: GateFailure[] = []
  const smoke: ColorChange[] = []
  for (const c of changes) {
    const svc = config.services[c.service]
    const set = snapshot.services.get(c.service)?.colors[c.to].targets
    const healthy = set?.healthyCount ?? 0
    if (healthy < svc.gate.minHealthy) {
      failures.push({
        service: c.service, color: c.to, reason: `${healthy} healthy target(s), gate.minHealthy is ${svc.gate.minHealthy}`,
        healthy, minHealthy: svc.gate.minHealthy,
        targets: set?.endpoints.filter((e) => !e.target.healthy).map((e) => e.target.describe()),
      })
    } else if (svc.smoke.length > 0) {
      smoke.push(c)
    }
  }
  return { failures, smoke }
}

/**
 * The shadow half, taken in the queue with the health half: a service with
 * `gate.maxShadowDiff` is refused when its comparison of the color it would
 * flip into (the idle targets in force: the snapshot's `shadowKey`) counts
 * at least `minShadowCompared` pairs, and more than that share of them differ
 * (noise left out). Fewer pairs: the comparison does not judge, and the
 * service is listed as `pending` when shadow traffic is on (more pairs are
 * coming: a release's testing phase waits for them; a flip goes on). `read`
 * gives the view of a service's comparison under a key, or undefined when
 * nothing was counted there.
 */
export function checkShadowGate (config: Config, snapshot: Snapshot, changes: readonly ColorChange[], read: (service: string, key: string) => ShadowView | undefined): GateFailure[] {
  const failures: GateFailure[] = []
  for (const c of changes) {
    const gate = config.services[c.service]?.gate
    const route = snapshot.services.get(c.service)
    if (gate?.maxShadowDiff === undefined || route?.shadowKey === undefined || route.live === c.to) continue
    const view = read(c.service, route.shadowKey)
    const compared = view?.compared ?? 0
    if (compared < gate.minShadowCompared) {
      if (route.shadow !== undefined) failures.push({ service: c.service, color: c.to, reason: `shadow: ${compared} of gate.minShadowCompared ${gate.minShadowCompared} pairs compared`, pending: true })
      continue
    }
    if (view === undefined || view.differed / view.compared <= gate.maxShadowDiff) continue
    failures.push({
      service: c.service,
      color: c.to,
      reason: `shadow: ${view.differed} of ${view.compared} pairs differ (${percent(view.differed / view.compared, 1)}), gate.maxShadowDiff is ${percent(gate.maxShadowDiff, 2)}`,
      shadow: view,
    })
  }
  return failures
}

/** A share as a percentage with at most `digits` decimals: 0.047 -> `4.7%`, 0.01 -> `1%`. */
function percent (share: number, digits: number): string {
  return `${Number((share * 100).toFixed(digits))}%`
}

/**
 * The second half, run outside the queue, one service after another: every
 * smoke check passes. `config` is read per service, so a reload meanwhile
 * applies to the checks still to run.
 */
export async function runSmokeGate (runner: SmokeRunner, config: () => Config, changes: readonly ColorChange[]): Promise<GateFailure[]> {
  const failures: GateFailure[] = []
  for (const c of changes) {
    const smoke = await runner.run(config().services[c.service], c.to)
    if (smoke.length > 0) {
      failures.push({ service: c.service, color: c.to, reason: `${smoke.length} smoke check(s) failed: ${smoke.map((f) => `${f.check}: ${f.reason}`).join('; ')}`, smoke })
    }
  }
  return failures
}

/** Readiness: config loaded and every live color's targets have had their first probe. */
export function checkReadiness (snapshot: Snapshot, prober: Prober): { ready: boolean, waiting: string[] } {
  const waiting: string[] = []
  for (const route of snapshot.services.values()) {
    for (const e of route.colors[route.live].targets.endpoints) {
      if (!prober.hasProbed(e.target)) waiting.push(`${route.name}/${route.live} ${e.target.url}`)
    }
  }
  return { ready: waiting.length === 0, waiting }
}
