//! Metrics at a real Prometheus endpoint: a node serving `/metrics` on 127.0.0.1 is called
//! over real UDP by another node, and a scrape over HTTP shows the calls per command, the
//! errors, the handler-time histogram, the caller as a peer with its RTT, and the drops by
//! reason. One process has one global recorder: a second node asking for one is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mesh_core::metrics::MetricsError;
use mesh_core::rpc::{CallError, Client, fallible_handler, handler};
use mesh_core::{CallContext, Discovery, LocalRegistry, Mesh, MeshError};
use mesh_tests::mesh::{LIMIT, TICK, node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET /metrics from `addr`: the body.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(LIMIT, s.read_to_string(&mut out))
        .await
        .expect("the endpoint answered")
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the first series whose line starts with `prefix` (name and labels).
fn value(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_scrape_shows_calls_errors_latency_and_peers() {
    let reg = LocalRegistry::new();
    // A public address is refused at start, with the field named.
    let public = Mesh::builder()
        .discovery(Discovery::local_registry(&reg))
        .prometheus("8.8.8.8:9464".parse().unwrap())
        .start()
        .await;
    match public {
        Err(MeshError::Config(e)) => assert_eq!(e.field, "metrics_listen"),
        other => panic!("expected a config refusal, got {:?}", other.map(|m| m.id())),
    }

    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let a = Mesh::builder()
        .node_type("game")
        .discovery(Discovery::local_registry(&reg))
        .update_interval(TICK)
        .prometheus(listen)
        .start()
        .await
        .unwrap();
    let _add = a
        .handle(
            10,
            handler(|_c: CallContext, (x, y): (i64, i64)| async move { x + y }),
        )
        .unwrap();
    let _div = a
        .handle(
            11,
            fallible_handler(|_c: CallContext, (x, y): (i64, i64)| async move {
                if y == 0 {
                    Err("division by zero".to_string())
                } else {
                    Ok(x / y)
                }
            }),
        )
        .unwrap();
    // The process's recorder is taken: a second endpoint is a typed error.
    let second = Mesh::builder()
        .discovery(Discovery::local_registry(&reg))
        .prometheus(format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap())
        .start()
        .await;
    assert!(
        matches!(second, Err(MeshError::Metrics(MetricsError::RecorderTaken))),
        "{:?}",
        second.map(|m| m.id())
    );

    let b = node(&reg, "web").await;
    for i in 0..20i64 {
        let s: i64 = Client::for_node(a.id())
            .on(&b)
            .call(10, &(i, 1i64))
            .await
            .unwrap();
        assert_eq!(s, i + 1);
    }
    for _ in 0..3 {
        let r: Result<i64, CallError<String>> = Client::for_node(a.id())
            .on(&b)
            .call_fallible(11, &(1i64, 0i64))
            .await;
        assert!(matches!(r, Err(CallError::Remote(_))), "{r:?}");
    }
    // The numbers reach the recorder at the next sample (once a second): scrape until
    // they are there, within the bound.
    let peer = b.addr().to_string();
    let until = Instant::now() + LIMIT;
    let body = loop {
        let body = scrape(listen).await;
        let served = value(&body, "mesh_requests_total{command=\"10\"");
        let failed = value(&body, "mesh_request_errors_total{command=\"11\"");
        let rtt = value(&body, &format!("mesh_peer_rtt_seconds{{peer=\"{peer}\"}}"));
        if served == Some(20.0) && failed == Some(3.0) && rtt.is_some() {
            break body;
        }
        assert!(
            Instant::now() < until,
            "the scrape never showed the calls:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Command 10 ran 20 times without error; 11 failed all 3 times.
    assert_eq!(
        value(&body, "mesh_request_errors_total{command=\"10\""),
        Some(0.0)
    );
    assert_eq!(
        value(&body, "mesh_requests_total{command=\"11\""),
        Some(3.0)
    );
    // The handler-time histogram, per command, recorded per request.
    assert_eq!(
        value(&body, "mesh_handler_seconds_count{command=\"10\""),
        Some(20.0),
        "{body}"
    );
    // The caller as a peer: an RTT above zero and below the bound, packets and bytes.
    let rtt = value(&body, &format!("mesh_peer_rtt_seconds{{peer=\"{peer}\"}}")).unwrap();
    assert!(rtt > 0.0 && rtt < LIMIT.as_secs_f64(), "{rtt}");
    assert!(
        value(
            &body,
            &format!("mesh_peer_rtt_p99_seconds{{peer=\"{peer}\"}}")
        )
        .unwrap()
            > 0.0
    );
    assert!(
        value(
            &body,
            &format!("mesh_peer_packets_sent_total{{peer=\"{peer}\"}}")
        )
        .unwrap()
            >= 23.0
    );
    assert!(
        value(
            &body,
            &format!("mesh_peer_received_bytes_total{{peer=\"{peer}\"}}")
        )
        .unwrap()
            > 0.0
    );
    // Drops by reason, discovery, nodes by type, shared objects, in-flight calls.
    assert!(
        body.contains("mesh_transport_drops_total{reason=\"malformed\"}"),
        "{body}"
    );
    assert_eq!(value(&body, "mesh_discovery_healthy"), Some(1.0));
    assert_eq!(value(&body, "mesh_nodes{node_type=\"web\"}"), Some(1.0));
    assert_eq!(
        value(&body, "mesh_shared_objects{kind=\"owned\"}"),
        Some(0.0)
    );
    assert_eq!(value(&body, "mesh_in_flight_calls"), Some(0.0));
    // The same figures through Mesh::stats.
    let stats = a.stats();
    let c10 = stats.commands.iter().find(|c| c.command == 10).unwrap();
    assert_eq!((c10.served, c10.served_errors), (20, 0));
    let p = stats.peers.iter().find(|p| p.addr == peer).unwrap();
    assert_eq!(p.node.as_deref(), Some(b.id().to_string().as_str()));
    b.stop().await;
    a.stop().await;
}
