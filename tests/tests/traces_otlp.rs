//! One call across three processes is one OpenTelemetry trace, exported over OTLP/HTTP.
//!
//! The test process is an OTLP receiver (a plain HTTP/1.1 listener on loopback decoding
//! the protobuf `ExportTraceServiceRequest`s the SDK's exporter posts) and the first node:
//! it calls `hop` on process A, which calls `hop` on process B. The spans of all three
//! processes arrive at the receiver; the test checks they share one trace id and that each
//! hop's span is the child of the span that made the call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_core::rpc::Client;
use mesh_core::telemetry::Otlp;
use mesh_core::{Discovery, Mesh};
use mesh_tests::node::NodeProcess;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The `hop` command of `mesh-node`.
const HOP: u16 = 4;
/// The largest export the receiver takes.
const MAX_BODY: usize = 16 << 20;

/// One exported span, with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

type Spans = Arc<Mutex<Vec<Got>>>;

/// An OTLP/HTTP receiver on a free loopback port: its traces URL and what it received.
async fn receiver() -> (String, Spans) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let spans: Spans = Arc::default();
    let keep = spans.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, keep.clone()));
        }
    });
    (url, spans)
}

/// Answers the exports posted on one connection (keep-alive) until it closes.
async fn serve(s: TcpStream, spans: Spans) {
    let mut r = BufReader::new(s);
    loop {
        let mut len = None;
        let mut first = true;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if first {
                assert!(line.starts_with("POST /v1/traces "), "{line}");
                first = false;
            } else if line.is_empty() {
                break;
            } else if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
                assert!(
                    !k.eq_ignore_ascii_case("transfer-encoding"),
                    "chunked exports are not read here: {line}"
                );
            }
        }
        let len = len.expect("an export without content-length");
        assert!(len <= MAX_BODY, "export of {len} bytes");
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.unwrap();
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    any_value::Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            let mut got = spans.lock().unwrap();
            for ss in rs.scope_spans {
                for sp in ss.spans {
                    got.push(Got {
                        service: service.clone(),
                        name: sp.name,
                        trace_id: sp.trace_id,
                        span_id: sp.span_id,
                        parent: sp.parent_span_id,
                    });
                }
            }
        }
        let ok =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if r.get_mut().write_all(ok.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find<'a>(spans: &'a [Got], service: &str, name: &str) -> Vec<&'a Got> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_across_three_processes_is_one_trace() {
    let (url, spans) = receiver().await;
    let traces = Otlp::http(url.clone())
        .service_name("caller")
        .install()
        .unwrap();

    let port = free_udp_port();
    let seed = format!("127.0.0.1:{port}");
    let caller = Mesh::builder()
        .node_type("caller")
        .port(port)
        .discovery(Discovery::seeds([seed.clone()]))
        .update_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let spawn = |service: &'static str| {
        let (seed, url) = (seed.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            NodeProcess::spawn(&[
                ("MESH_SEEDS", seed.as_str()),
                ("MESH_UPDATE_INTERVAL", "100ms"),
                ("MESH_NODE_TYPE", service),
                ("MESH_TEST_OTLP", url.as_str()),
                ("MESH_TEST_SERVICE", service),
            ])
        })
    };
    let mut a = spawn("node-a").await.unwrap().unwrap();
    let mut b = spawn("node-b").await.unwrap().unwrap();
    // A must know B to call it; the caller must know A.
    let until = Instant::now() + Duration::from_secs(10);
    while caller.nodes().len() < 3 {
        assert!(Instant::now() < until, "the processes did not join");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = (a.id.addr, b.id.addr);

    let hops = Client::for_node(a_addr)
        .on(&caller)
        .with_timeout(Duration::from_secs(5))
        .call_fallible::<_, u32, String>(HOP, &vec![b_addr.to_string()])
        .await
        .unwrap();
    assert_eq!(hops, 2, "the call ran on A and on B");

    // The children flush their spans when they stop; this process flushes its own.
    tokio::task::spawn_blocking(move || {
        b.stop().unwrap();
        a.stop().unwrap();
    })
    .await
    .unwrap();
    caller.stop().await;
    traces.flush().unwrap();

    let until = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = spans.lock().unwrap().clone();
        let all_in = !find(&got, "node-b", "request").is_empty()
            && !find(&got, "node-a", "call").is_empty()
            && !find(&got, "caller", "call").is_empty();
        if all_in {
            break got;
        }
        assert!(
            Instant::now() < until,
            "spans missing at the receiver; it has {:?}",
            got.iter()
                .map(|s| (&s.service, &s.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Each process also makes and serves calls of its own (discovery's): the chain is
    // found by its links, and must be exactly one.
    let child_of = |parent: &Got, service: &str, name: &str| -> Vec<Got> {
        find(&got, service, name)
            .into_iter()
            .filter(|s| s.parent == parent.span_id)
            .cloned()
            .collect()
    };
    let tops = find(&got, "caller", "call");
    let chains: Vec<(Got, Got)> = tops
        .iter()
        .flat_map(|t| {
            child_of(t, "node-a", "request")
                .into_iter()
                .map(|a| ((*t).clone(), a))
        })
        .collect();
    assert_eq!(
        chains.len(),
        1,
        "one request on A answers one call of the caller: {got:?}"
    );
    let (top, on_a) = &chains[0];
    assert_eq!(top.trace_id.len(), 16);
    assert_eq!(
        on_a.trace_id, top.trace_id,
        "A's span is in the caller's trace"
    );
    // A's nested call is a child of its request span, and B's request of that call.
    let a_call = child_of(on_a, "node-a", "call");
    assert_eq!(a_call.len(), 1, "A's handler made one call: {got:?}");
    let a_call = &a_call[0];
    assert_eq!(
        a_call.trace_id, top.trace_id,
        "A's call is in the same trace"
    );
    let on_b = child_of(a_call, "node-b", "request");
    assert_eq!(on_b.len(), 1, "B's span is the child of A's call: {got:?}");
    let on_b = &on_b[0];
    assert_eq!(on_b.trace_id, top.trace_id, "B's span is in the same trace");
    // Every span id is distinct: four spans, one trace.
    let mut ids = [&top.span_id, &on_a.span_id, &a_call.span_id, &on_b.span_id];
    ids.sort();
    assert!(ids.windows(2).all(|w| w[0] != w[1]), "{ids:?}");
    drop(traces);
}
