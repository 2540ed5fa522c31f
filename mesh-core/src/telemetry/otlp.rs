//! The OTLP exporter and the `tracing` layer that feeds it.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The default filter of exported spans: mesh-core's per-call spans (debug level) and
/// everything else at info.
pub const DEFAULT_FILTER: &str = "info,mesh_core=debug";

/// Why traces could not be set up or flushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP endpoint is not an `http://` URL.
    #[error(
        "telemetry endpoint {endpoint:?}: {reason} (give the collector's OTLP/HTTP traces URL, such as http://127.0.0.1:4318/v1/traces)"
    )]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The span filter does not parse.
    #[error(
        "telemetry filter {directives:?}: {reason} (use `tracing-subscriber` EnvFilter directives, such as {DEFAULT_FILTER:?})"
    )]
    Filter {
        /// The directives as given.
        directives: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("telemetry: the OTLP exporter could not be built: {0}")]
    Exporter(String),
    /// A global `tracing` subscriber is already set in this process.
    #[error(
        "telemetry: a tracing subscriber is already installed in this process; compose `Otlp::layer` into it instead of `install`"
    )]
    AlreadyInstalled,
    /// Spans could not be flushed to the collector.
    #[error("telemetry: flushing spans to the collector failed: {0}")]
    Flush(String),
}

/// How to export this process's spans over OTLP/HTTP (protobuf).
#[derive(Debug, Clone)]
#[must_use = "an Otlp does nothing until `install` or `layer`"]
pub struct Otlp {
    endpoint: Option<String>,
    service_name: Option<String>,
    filter: String,
    timeout: Duration,
}

impl Otlp {
    /// Exports to the collector's OTLP/HTTP traces URL (`http://host:4318/v1/traces`).
    pub fn http(endpoint: impl Into<String>) -> Otlp {
        Otlp {
            endpoint: Some(endpoint.into()),
            ..Otlp::from_env()
        }
    }

    /// Exports where the standard variables say: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` added, else
    /// `http://localhost:4318/v1/traces`; `OTEL_SERVICE_NAME` names the service.
    pub fn from_env() -> Otlp {
        Otlp {
            endpoint: None,
            service_name: None,
            filter: DEFAULT_FILTER.to_string(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The `service.name` of this process's spans (default: `OTEL_SERVICE_NAME`, else the
    /// SDK's `unknown_service`).
    pub fn service_name(mut self, name: impl Into<String>) -> Otlp {
        self.service_name = Some(name.into());
        self
    }

    /// Which spans are exported, as `EnvFilter` directives (default [`DEFAULT_FILTER`]).
    pub fn filter(mut self, directives: impl Into<String>) -> Otlp {
        self.filter = directives.into();
        self
    }

    /// How long one export may take before it is abandoned (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Otlp {
        self.timeout = timeout;
        self
    }

    /// The layer exporting spans (filtered) and the guard that flushes them: for an
    /// application that builds its own subscriber.
    pub fn layer<S>(self) -> Result<(impl Layer<S> + Send + Sync, OtlpGuard), TelemetryError>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let filter = EnvFilter::try_new(&self.filter).map_err(|e| TelemetryError::Filter {
            directives: self.filter.clone(),
            reason: e.to_string(),
        })?;
        let provider = self.provider()?;
        let tracer = provider.tracer("mesh-core");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter);
        Ok((layer, OtlpGuard { provider }))
    }

    /// Installs the global subscriber: the exporting layer, and a human log on stderr
    /// when `RUST_LOG` is set. Keep the guard for as long as spans should be exported.
    pub fn install(self) -> Result<OtlpGuard, TelemetryError> {
        let (layer, guard) = self.layer()?;
        let log = std::env::var_os("RUST_LOG").map(|_| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(EnvFilter::from_default_env())
        });
        tracing_subscriber::registry()
            .with(layer)
            .with(log)
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        Ok(guard)
    }

    fn provider(&self) -> Result<SdkTracerProvider, TelemetryError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(self.timeout);
        if let Some(e) = &self.endpoint {
            check_endpoint(e)?;
            exporter = exporter.with_endpoint(e.clone());
        }
        let exporter = exporter
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if let Some(name) = &self.service_name {
            resource = resource.with_service_name(name.clone());
        }
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build())
    }
}

fn check_endpoint(e: &str) -> Result<(), TelemetryError> {
    let refuse = |reason| {
        Err(TelemetryError::Endpoint {
            endpoint: e.to_string(),
            reason,
        })
    };
    let Some(rest) = e.strip_prefix("http://") else {
        return refuse(if e.starts_with("https://") {
            "https is not built in (this exporter has no TLS); use http:// to a local collector"
        } else {
            "not an http:// URL"
        });
    };
    if rest.is_empty() || rest.starts_with('/') {
        return refuse("no host");
    }
    Ok(())
}

/// Keeps the exporter running; dropping it sends the spans not yet sent and stops it.
#[derive(Debug)]
#[must_use = "dropping the guard stops exporting spans"]
pub struct OtlpGuard {
    provider: SdkTracerProvider,
}

impl OtlpGuard {
    /// Sends every finished span now.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Flush(e.to_string()))
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            // Stderr: the subscriber may be the very thing being shut down.
            eprintln!("mesh-core telemetry: flushing spans at exit failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_filters_are_checked() {
        assert!(matches!(
            check_endpoint("https://x:4318/v1/traces"),
            Err(TelemetryError::Endpoint { .. })
        ));
        assert!(matches!(
            check_endpoint("127.0.0.1:4318"),
            Err(TelemetryError::Endpoint { .. })
        ));
        assert!(check_endpoint("http://127.0.0.1:4318/v1/traces").is_ok());
        let r = Otlp::http("http://127.0.0.1:1/v1/traces")
            .filter("mesh_core=loud")
            .layer::<tracing_subscriber::Registry>();
        match r {
            Err(e @ TelemetryError::Filter { .. }) => {
                assert!(e.to_string().contains("mesh_core=loud"), "{e}");
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a bad filter was accepted"),
        }
    }
}
