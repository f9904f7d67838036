/**
 * Tracing through the OpenTelemetry API. Deno registers its own provider when
 * OTEL_DENO=true (and exports over OTLP per the standard OTEL_* variables);
 * otherwise the API is a no-op and these spans cost next to nothing.
 */
import { type Attributes, type Span, SpanStatusCode, trace } from "@opentelemetry/api";

const tracer = trace.getTracer("ringhook");

/** Runs `fn` inside an active span that ends (and records a failure) when `fn` settles. */
export function traced<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (e) {
      span.recordException(e as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      span.end();
    }
  });
}
