//! Traces across hops through OpenTelemetry (cargo feature `opentelemetry`).
//!
//! Every request carries a W3C trace context ([`TraceContext`](crate::rpc::TraceContext)).
//! With this feature, the caller's `call` span and the callee's `request` span are
//! OpenTelemetry spans: the context a request carries *is* the calling span's, and the
//! handler's span takes it as its remote parent. One call across three nodes is one trace,
//! with the parent-child links between processes, in any OTLP collector.
//!
//! [`Otlp`] sets it up: an OTLP/HTTP (protobuf) exporter, a batching tracer provider and a
//! [`tracing-opentelemetry`](tracing_opentelemetry) layer that exports mesh-core's spans
//! (its `call`, `request`, `oneway` spans, at debug level) and the application's own.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_core::telemetry::Otlp;
//!
//! // Keep the guard: dropping it flushes the spans not yet sent and stops the exporter.
//! let _traces = Otlp::http("http://127.0.0.1:4318/v1/traces")
//!     .service_name("matchmaker")
//!     .install()?;
//! let mesh = mesh_core::Mesh::builder().start().await?;
//! // ... every call this node makes or serves is now a span of one cross-node trace.
//! # mesh.stop().await;
//! # Ok(()) }
//! ```
//!
//! Without a `tracing` subscriber carrying the OpenTelemetry layer, nothing changes: the
//! trace context still travels, made of random ids as before.

mod otlp;
pub use otlp::{DEFAULT_FILTER, Otlp, OtlpGuard, TelemetryError};
