// Gateway logs (start, config, changes, errors) as one JSON line each on stdout.

export type Level = 'info' | 'warn' | 'error'

export type LogSink = (line: string) => void

let sink: LogSink = (line) => { process.stdout.write(line + '\n') }

export function setLogSink (next: LogSink): void {
  sink = next
}

export function log (level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  sink(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }))
}
