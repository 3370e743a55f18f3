// Delivers an event to an operator's URL (drain.onDrained): POST of the event
// JSON, retried with exponential backoff, so automation can scale the old color down.

import { request } from 'undici'
import { log } from '../log.js'

export interface WebhookOptions {
  /** Attempts in all. Default 5. */
  attempts?: number
  /** Wait before the first retry, doubled each time, ms. Default 500. */
  backoffMs?: number
  /** Deadline of one attempt, ms. Default 5000. */
  timeoutMs?: number
}

/** Resolves true once a 2xx arrives, false when every attempt failed (each failure is logged). */
export async function deliver (url: string, body: unknown, opts: WebhookOptions = {}): Promise<boolean> {
  const attempts = opts.attempts ?? 5
  let wait = opts.backoffMs ?? 500
  const payload = JSON.stringify(body)
  for (let i = 1; i <= attempts; i++) {
    try {
      const res = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'switchyard' },
        body: payload,
        signal: AbortSignal.timeout(opts.timeoutMs ?? 5000),
      })
      await res.body.dump()
      if (res.statusCode >= 200 && res.statusCode < 300) return true
      log('warn', 'webhook refused', { url, status: res.statusCode, attempt: i })
    } catch (err) {
      log('warn', 'webhook failed', { url, error: (err as Error).message, attempt: i })
    }
    if (i < attempts) {
      await new Promise((resolve) => setTimeout(resolve, wait).unref())
      wait *= 2
    }
  }
  log('error', 'webhook gave up', { url, attempts })
  return false
}
