// A real gRPC server and client (@grpc/grpc-js) for tests, with no .proto:
// messages are JSON bytes. One service, test.Echo, with a method of each kind.

import * as grpc from '@grpc/grpc-js'

interface Teardown {
  teardown: (fn: () => unknown) => void
}

export interface Msg {
  text?: string
  color?: string
  /** Ask the server to answer with this gRPC status code instead. */
  fail?: number
  /** Ask the server to wait this long before answering, ms. */
  delay?: number
  /** Server streaming: how many messages. */
  count?: number
  n?: number
}

const ser = (v: Msg): Buffer => Buffer.from(JSON.stringify(v))
const de = (b: Buffer): Msg => JSON.parse(b.toString()) as Msg

function method (name: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Msg, Msg> {
  return { path: `/test.Echo/${name}`, requestStream, responseStream, requestSerialize: ser, requestDeserialize: de, responseSerialize: ser, responseDeserialize: de, originalName: name }
}

export const ECHO = {
  unary: method('Unary', false, false),
  serverStream: method('ServerStream', false, true),
  clientStream: method('ClientStream', true, false),
  bidi: method('Bidi', true, true),
} satisfies grpc.ServiceDefinition

/** The gRPC health protocol's messages, protobuf by hand (the server side of the probe). */
const HEALTH = {
  check: {
    path: '/grpc.health.v1.Health/Check',
    requestStream: false,
    responseStream: false,
    requestSerialize: (r: { service: string }) => Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(r.service)]), Buffer.from(r.service)]),
    // An object, not a bare string: grpc-js takes a falsy message ('' for the whole server) for no message at all.
    requestDeserialize: (b: Buffer) => ({ service: b.length === 0 ? '' : b.subarray(2, 2 + b[1]).toString() }),
    responseSerialize: (status: number) => Buffer.from([0x08, status]),
    responseDeserialize: (b: Buffer) => b[1] ?? 0,
  },
} satisfies grpc.ServiceDefinition

export interface EchoServer {
  url: string
  port: number
  color: string
  server: grpc.Server
  /** Calls the server received, by method name. */
  calls: Record<string, number>
  /** What grpc.health.v1 answers (1 SERVING, 2 NOT_SERVING), by service name ('' for the server). */
  health: Map<string, number>
  stop: () => Promise<void>
}

/** A grpc-js server answering test.Echo with its `color`, and grpc.health.v1. */
export async function startEchoServer (t: Teardown, color: string): Promise<EchoServer> {
  const server = new grpc.Server()
  const calls: Record<string, number> = {}
  const health = new Map<string, number>([['', 1]])
  const count = (name: string): void => { calls[name] = (calls[name] ?? 0) + 1 }
  const failure = (m: Msg): grpc.ServiceError | null => m.fail === undefined ? null : Object.assign(new Error(`asked to fail with ${m.fail}`), { code: m.fail, details: `asked to fail with ${m.fail}`, metadata: new grpc.Metadata() })
  server.addService(ECHO, {
    unary: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      count('unary')
      const answer = (): void => {
        const err = failure(call.request)
        if (err !== null) return cb(err)
        cb(null, { text: call.request.text, color })
      }
      if (call.request.delay !== undefined) setTimeout(answer, call.request.delay)
      else answer()
    },
    serverStream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      count('serverStream')
      for (let n = 0; n < (call.request.count ?? 3); n++) call.write({ n, color, text: call.request.text })
      call.end()
    },
    clientStream: (call: grpc.ServerReadableStream<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      count('clientStream')
      const texts: string[] = []
      call.on('data', (m: Msg) => texts.push(m.text ?? ''))
      call.on('end', () => cb(null, { text: texts.join(','), color }))
    },
    bidi: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
      count('bidi')
      call.on('cancelled', () => count('bidiCancelled'))
      call.on('data', (m: Msg) => call.write({ text: m.text, color }))
      call.on('end', () => call.end())
    },
  })
  server.addService(HEALTH, {
    check: (call: grpc.ServerUnaryCall<{ service: string }, number>, cb: grpc.sendUnaryData<number>) => {
      count('health')
      const status = health.get(call.request.service)
      if (status === undefined) return cb(Object.assign(new Error('unknown service'), { code: grpc.status.NOT_FOUND, details: 'unknown service', metadata: new grpc.Metadata() }))
      cb(null, status)
    },
  })
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => err === null ? resolve(p) : reject(err))
  })
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    server.forceShutdown()
  }
  t.teardown(stop)
  return { url: `http://127.0.0.1:${port}`, port, color, server, calls, health, stop }
}

export type EchoClient = grpc.Client & Record<keyof typeof ECHO, (...args: any[]) => any>

const EchoClientCtor = grpc.makeGenericClientConstructor(ECHO, 'Echo')

/** A grpc-js client of test.Echo on `hostPort` (h2c, prior knowledge); `authority` names the host it asks for (routing by host). */
export function echoClient (t: Teardown, hostPort: string, authority?: string): EchoClient {
  const options = authority === undefined ? {} : { 'grpc.default_authority': authority }
  const client = new EchoClientCtor(hostPort, grpc.credentials.createInsecure(), options) as unknown as EchoClient
  t.teardown(() => client.close())
  return client
}

/** A unary call: the answer, or the error's status code. */
export async function unary (client: EchoClient, msg: Msg, deadlineMs = 5000): Promise<{ msg?: Msg, code: number, details?: string }> {
  return await new Promise((resolve) => {
    client.unary(msg, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: Msg) => {
      if (err !== null) resolve({ code: err.code, details: err.details })
      else resolve({ msg: res, code: 0 })
    })
  })
}

export { grpc }
