// A guard for undici 7's HTTP/1.1 client (nodejs/undici#5360): when an
// upstream's FIN arrives while undici's parser is paused by backpressure, on
// an answer that ends its connection (close-delimited, or `connection:
// close`), the socket's 'end' handler asserts `!this.paused` and throws
// outside any callback we could catch: the process dies. A slow client (an
// HTTP/2 client's flow-control window is enough) whose buffers are full just
// as the last bytes arrive makes it happen. undici 8 fixes it (#5389) but does
// not run on Node 20, and no 7.x has the fix.
//
// The same assertion waits in its 'error' handler, which takes an ECONNRESET
// on such an answer for its end: a reset while paused goes to undici as its
// own socket error instead (the answer was cut, and is failed as such).
//
// The guard holds the socket's 'end' (and the end of our side that follows
// it) until the parser is resumed (our handler resumes it when the client
// drains), and delivers it then, when undici can finish the message. A
// socket whose parser is not paused at its end sees no difference.

import type { Socket } from 'node:net'
import { buildConnector, errors } from 'undici'

/** The part of undici's parser the guard reads. */
interface Parser {
  paused: boolean
}

/** The connector undici builds for these options, with every socket it makes guarded. */
export function guardedConnector (options: buildConnector.BuildOptions): buildConnector.connector {
  const connect = buildConnector(options)
  return (opts, callback) => {
    connect(opts, (...args: [null, Socket] | [Error, null]) => {
      if (args[0] === null) holdEndWhilePaused(args[1])
      callback(...args)
    })
  }
}

/** undici's parser on a socket it owns (a symbol property undici names `parser`), if any. */
function parserOf (socket: Socket): Parser | undefined {
  const key = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'parser')
  if (key === undefined) return undefined
  const parser = (socket as unknown as Record<symbol, unknown>)[key]
  if (typeof parser !== 'object' || parser === null || typeof (parser as Parser).paused !== 'boolean') return undefined
  return parser as Parser
}

/** Delays the socket's 'end' event, while its parser is paused, until the parser resumes. */
export function holdEndWhilePaused (socket: Socket): void {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called with the socket as this, below
  const emit = socket.emit as (this: Socket, event: string | symbol, ...args: unknown[]) => boolean
  socket.emit = function (this: Socket, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'end') {
      const parser = parserOf(this)
      if (parser?.paused === true) {
        // Right after 'end', the stream ends our side too (allowHalfOpen false) and then destroys
        // the socket, whose 'close' handler asserts the same: half-open keeps it until the resume.
        const halfOpen = this.allowHalfOpen
        this.allowHalfOpen = true
        const deliver = (): void => {
          if (this.destroyed) return
          if (parser.paused) return whenResumed(parser, deliver)
          this.allowHalfOpen = halfOpen
          emit.call(this, 'end')
          // What the stream would have done after 'end'.
          if (!halfOpen && this.writable) this.end()
        }
        whenResumed(parser, deliver)
        return this.listenerCount('end') > 0
      }
    }
    if (event === 'error' && (args[0] as { code?: unknown } | undefined)?.code === 'ECONNRESET' && parserOf(this)?.paused === true) {
      // undici's 'error' handler takes ECONNRESET on an answer that ends its connection for the
      // end of the body and finishes the parser: the same assertion. Paused, part of the answer
      // is still unread: the answer was cut, an error like any other reset.
      return emit.call(this, 'error', resetWhilePaused(args[0] as Error))
    }
    return emit.call(this, event, ...args)
  } as Socket['emit']
}

/** The reset as undici's own socket error (a reset to the attempt policy, as ECONNRESET is), the reset its cause. */
function resetWhilePaused (reset: Error): Error {
  const err = new errors.SocketError('the upstream reset the connection while its answer waited for the client')
  err.cause = reset
  return err
}

/**
 * Runs `then` once the parser is resumed, after the resume is over. undici's
 * resume sets `paused` to false, then parses what the socket holds (which can
 * pause it again: `then` checks). The resume itself is bound at the parser's
 * birth and handed to the request, so it is `paused` that is watched.
 */
function whenResumed (parser: Parser, then: () => void): void {
  let paused = parser.paused
  Object.defineProperty(parser, 'paused', {
    configurable: true,
    enumerable: true,
    get: () => paused,
    set: (value: boolean) => {
      paused = value
      if (value) return
      Object.defineProperty(parser, 'paused', { value, writable: true, configurable: true, enumerable: true })
      process.nextTick(then)
    },
  })
}
