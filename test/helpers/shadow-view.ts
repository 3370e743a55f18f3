// GET /v1/services/NAME/shadow as the end-to-end shadow tests read it.

import type { ShadowView } from '../../src/shadow/types.js'
import { admin } from './index.js'

/** The endpoint's answer: the comparison (src/shadow/types.ts ShadowView) and whether copies are being sent now. */
export type ShadowApiView = ShadowView & { active: boolean }

/** GET /v1/services/`service`/shadow on `adminUrl`; anything but a 200 throws, with the answer. */
export async function shadowView (adminUrl: string, service = 'users'): Promise<ShadowApiView> {
  const r = await admin(adminUrl, 'GET', `/v1/services/${service}/shadow`)
  if (r.status !== 200) throw new Error(`GET shadow: ${r.status} ${r.text}`)
  return r.json as ShadowApiView
}
