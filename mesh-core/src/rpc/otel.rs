//! The bridge between the trace context a request carries and the OpenTelemetry span of
//! the code that sends or serves it. Without the `opentelemetry` feature both are identity
//! functions.

use super::scope::TraceContext;

/// The trace context a call made now carries: the current span's OpenTelemetry context
/// when there is one (so the callee's span is its child), otherwise `fallback` (the
/// running handler's trace continued, or a new trace).
#[cfg(feature = "opentelemetry")]
pub(crate) fn outgoing(fallback: TraceContext) -> TraceContext {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let span = tracing::Span::current();
    if span.is_none() {
        return fallback;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return fallback;
    }
    TraceContext {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        parent_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    }
}

/// See the version with the feature on.
#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
pub(crate) fn outgoing(fallback: TraceContext) -> TraceContext {
    fallback
}

/// Makes `span` (a handler's span, not yet entered) a child of the remote span `trace`
/// names. Nothing happens when the span is disabled or no OpenTelemetry layer is installed.
#[cfg(feature = "opentelemetry")]
pub(crate) fn adopt(span: &tracing::Span, trace: &TraceContext) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if span.is_none() || trace.parent_id == 0 {
        return;
    }
    let remote = SpanContext::new(
        TraceId::from_bytes(trace.trace_id.to_be_bytes()),
        SpanId::from_bytes(trace.parent_id.to_be_bytes()),
        TraceFlags::new(trace.flags),
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(remote);
    // No layer, or a disabled span: the span simply stays where `tracing` put it.
    let _ = span.set_parent(cx);
}

/// See the version with the feature on.
#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
pub(crate) fn adopt(_span: &tracing::Span, _trace: &TraceContext) {}
