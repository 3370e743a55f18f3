// Tracing as a process runs it (`tracing` in the config): the tracer the
// resolve step starts spans with, and the exporter they go to. Each process
// that serves requests (the gateway's own listener, or each worker) has one.

import type { TracingConfig } from '../config/schema.js'
import { OtlpExporter, type ExporterOptions } from './exporter.js'
import { Tracer } from './tracer.js'

export class Tracing {
  readonly tracer: Tracer
  readonly exporter: OtlpExporter

  constructor (settings: TracingConfig, opts: Partial<ExporterOptions> = {}) {
    this.exporter = new OtlpExporter(settings.otlp, settings.serviceName, opts)
    this.tracer = new Tracer(settings, this.exporter)
  }

  /** After the last request ended: what is queued is sent (bounded by the exporter's timeout). */
  async stop (): Promise<void> {
    await this.exporter.stop()
  }
}

/** Tracing for `settings`, or undefined when it is off: the resolve step then has no tracer to ask. */
export function startTracing (settings: TracingConfig | undefined): Tracing | undefined {
  return settings === undefined ? undefined : new Tracing(settings)
}
