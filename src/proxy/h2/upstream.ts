// Forwarding over HTTP/2 to a service's targets (protocol h2c or h2): gRPC
// calls and streams, trailers included. (Being built for issue 14: helper C.)

import type { Downstream } from '../downstream.js'
import type { Resolution } from '../resolve.js'

/** Sends one request to `to` over HTTP/2 and relays the answer, trailers included, to `down`. */
export function forwardOverH2 (down: Downstream, _to: Resolution): void {
  down.fail('upstream_error', 'HTTP/2 upstreams are not built yet')
}
