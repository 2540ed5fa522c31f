//! Metrics through the [`metrics`] facade, and (with the `prometheus` feature) a Prometheus
//! `/metrics` endpoint.
//!
//! A node started with [`MeshConfig::metrics`](crate::MeshConfig::metrics) (or
//! [`MeshBuilder::metrics`](crate::MeshBuilder::metrics)) records into whatever recorder the
//! process installed before the node started:
//!
//! * per request, the handler time of its command, in the histogram
//!   [`mesh_handler_seconds`](crate::rpc::HANDLER_SECONDS) (labels `command`, `method`),
//!   through a handle built when the command was registered;
//! * once a second ([`SAMPLE_INTERVAL`]), everything [`Mesh::stats`](crate::Mesh::stats)
//!   counts, as counters and gauges: per peer (`peer` label) the smoothed and p99 RTT,
//!   packets sent, retransmissions and bytes each way; transport drops by `reason`; requests
//!   run and failed per command; calls in flight and requests running; discovery health,
//!   syncs and nodes in view per `node_type`; shared objects owned, replicated and backed.
//!   The transport stays sans-IO: nothing is recorded from inside it.
//!
//! With the `prometheus` feature, [`MeshConfig::metrics_listen`](crate::MeshConfig::metrics_listen)
//! (or [`MeshBuilder::prometheus`](crate::MeshBuilder::prometheus)) installs the
//! `metrics-exporter-prometheus` recorder for the process and serves `/metrics` on that
//! address, a loopback or private one. A process has one global recorder: a second node
//! asking for one is refused with [`MetricsError::RecorderTaken`]; let it record into the
//! first one's with `metrics = true` instead.
//!
//! ```no_run
//! # async fn run() -> Result<(), mesh_core::MeshError> {
//! let mesh = mesh_core::Mesh::builder()
//!     .node_type("game")
//!     .prometheus("127.0.0.1:9464".parse().unwrap())
//!     .start()
//!     .await?;
//! // curl http://127.0.0.1:9464/metrics
//! # let _ = mesh; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::MeshStats;
use crate::discovery::Health;

/// How often a node copies its figures into the recorder.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The process already has a global metrics recorder (another node's, or the
    /// application's own).
    #[error(
        "the process already has a metrics recorder: serve /metrics from one node only, and start the others with `metrics = true` (they record into it)"
    )]
    RecorderTaken,
    /// The Prometheus endpoint could not be set up (the address is taken, say).
    #[error("prometheus endpoint on {addr}: {reason}")]
    Endpoint {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
}

/// Whether `ip` is a loopback or private address (10/8, 172.16/12, 192.168/16, fc00::/7),
/// the only ones a node serves its metrics or its cluster page on.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    }
}

/// Installs the Prometheus recorder for the process, serving `/metrics` on `addr`; the
/// future is the HTTP endpoint (run it until the node stops).
#[cfg(feature = "prometheus")]
pub(crate) fn install_prometheus(
    addr: std::net::SocketAddr,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, MetricsError> {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use metrics_util::MetricKindMask;
    let (recorder, endpoint) = PrometheusBuilder::new()
        .with_http_listener(addr)
        // A peer that went away stops being sampled: its series go after a while.
        .idle_timeout(
            MetricKindMask::COUNTER | MetricKindMask::GAUGE,
            Some(SAMPLE_INTERVAL * 30),
        )
        .build()
        .map_err(|e| MetricsError::Endpoint {
            addr,
            reason: e.to_string(),
        })?;
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::RecorderTaken)?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(async move {
        if endpoint.await.is_err() {
            tracing::warn!(%addr, "the Prometheus endpoint stopped");
        }
    })
}

/// Copies one sample of a node's figures into the recorder.
pub(crate) fn record(stats: &MeshStats, health: &Health, nodes: &BTreeMap<String, usize>) {
    use metrics::{counter, gauge};
    let secs = |us: u64| us as f64 / 1e6;
    for p in &stats.peers {
        let peer = p.addr.clone();
        gauge!("mesh_peer_rtt_seconds", "peer" => peer.clone()).set(secs(p.srtt_us));
        gauge!("mesh_peer_rtt_p99_seconds", "peer" => peer.clone()).set(secs(p.rtt_p99_us));
        counter!("mesh_peer_packets_sent_total", "peer" => peer.clone()).absolute(p.packets_out);
        counter!("mesh_peer_retransmits_total", "peer" => peer.clone()).absolute(p.retransmits);
        counter!("mesh_peer_received_bytes_total", "peer" => peer.clone()).absolute(p.bytes_in);
        counter!("mesh_peer_sent_bytes_total", "peer" => peer).absolute(p.bytes_out);
    }
    for c in &stats.commands {
        let (command, method) = (c.command.to_string(), c.name.clone());
        counter!("mesh_requests_total", "command" => command.clone(), "method" => method.clone())
            .absolute(c.served);
        counter!("mesh_request_errors_total", "command" => command, "method" => method)
            .absolute(c.served_errors);
    }
    gauge!("mesh_in_flight_calls").set(stats.in_flight as f64);
    // The transport's counters and drops, and the messaging layer's, by their field names
    // (one list: the structs themselves).
    if let Ok(serde_json::Value::Object(t)) = serde_json::to_value(&stats.transport) {
        for (k, v) in t {
            match v {
                serde_json::Value::Number(n) => {
                    counter!(format!("mesh_transport_{k}_total")).absolute(n.as_u64().unwrap_or(0));
                }
                serde_json::Value::Object(drops) => {
                    for (reason, n) in drops {
                        counter!("mesh_transport_drops_total", "reason" => reason)
                            .absolute(n.as_u64().unwrap_or(0));
                    }
                }
                _ => {}
            }
        }
    }
    if let Ok(serde_json::Value::Object(r)) = serde_json::to_value(stats.rpc) {
        for (k, n) in r {
            counter!("mesh_rpc_dropped_total", "reason" => k).absolute(n.as_u64().unwrap_or(0));
        }
    }
    let s = &stats.shared;
    gauge!("mesh_shared_objects", "kind" => "owned").set(s.owned as f64);
    gauge!("mesh_shared_objects", "kind" => "replica").set(s.replicas as f64);
    gauge!("mesh_shared_objects", "kind" => "backup").set(s.backing as f64);
    counter!("mesh_shared_resyncs_total").absolute(s.resyncs);
    counter!("mesh_shared_lagged_total").absolute(s.lagged);
    counter!("mesh_shared_forged_pushes_total").absolute(s.forged_pushes);
    counter!("mesh_shared_dropped_pushes_total").absolute(s.dropped_pushes);
    counter!("mesh_shared_takeovers_total").absolute(s.takeovers);
    counter!("mesh_shared_fenced_total").absolute(s.fenced);
    gauge!("mesh_discovery_healthy").set(if matches!(health, Health::Healthy) {
        1.0
    } else {
        0.0
    });
    for (t, n) in nodes {
        gauge!("mesh_nodes", "node_type" => t.clone()).set(*n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "::1",
            "fd00::1",
        ] {
            assert!(is_private(ok.parse().unwrap()), "{ok}");
        }
        for bad in ["8.8.8.8", "0.0.0.0", "172.32.0.1", "2001:db8::1", "::"] {
            assert!(!is_private(bad.parse().unwrap()), "{bad}");
        }
    }
}
