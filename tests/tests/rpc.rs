//! Messaging on command ids across nodes over real UDP on 127.0.0.1: typed calls, every error
//! kind produced for real, deadlines, cancellation, concurrency, relay fan-out, balanced calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mesh_core::rpc::{
    Broadcast, CallError, Client, CodecStage, Command, Incompatibility, NoMesh, Side, Unreachable,
    fallible_handler, fingerprint, handler, raw_handler,
};
use mesh_core::{CallContext, Discovery, LocalRegistry, Mesh, NodeStatus};
use mesh_tests::mesh::node;
use mesh_tests::node::NodeProcess;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum MathError {
    DivByZero,
}

#[tokio::test]
async fn typed_calls_remote_errors_and_local_short_circuit() {
    let reg = LocalRegistry::new();
    let a = node(&reg, "math").await;
    let b = node(&reg, "web").await;
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
                    Err(MathError::DivByZero)
                } else {
                    Ok(x / y)
                }
            }),
        )
        .unwrap();
    // By node id, by address, by "host:port" string.
    let s: i64 = Client::for_node(a.id())
        .on(&b)
        .call(10, &(2i64, 3i64))
        .await
        .unwrap();
    assert_eq!(s, 5);
    let s: i64 = Client::for_node(a.addr())
        .on(&b)
        .call(10, &(4i64, 3i64))
        .await
        .unwrap();
    assert_eq!(s, 7);
    let s: i64 = Client::for_node(a.addr().to_string())
        .on(&b)
        .call(10, &(1i64, 1i64))
        .await
        .unwrap();
    assert_eq!(s, 2);
    let q: Result<i64, CallError<MathError>> = Client::for_node(a.id())
        .on(&b)
        .call_fallible(11, &(7i64, 0i64))
        .await;
    let e = q.unwrap_err();
    assert_eq!(e, CallError::Remote(MathError::DivByZero));
    assert!(e.may_have_run() && e.is_remote());
    // A call to itself runs without the network.
    let sent_before = a.stats().transport.datagrams_sent;
    let s: i64 = Client::for_node(a.id())
        .on(&a)
        .call(10, &(1i64, 2i64))
        .await
        .unwrap();
    assert_eq!(s, 3);
    assert_eq!(a.stats().transport.datagrams_sent, sent_before);
    // The node record lists what it serves.
    b.wait_for_latest_view().await.unwrap();
    let rec = b.node(a.id()).unwrap();
    assert!(rec.serves(10) && rec.serves(11));
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn every_error_kind_for_real() {
    let reg = LocalRegistry::new();
    let a = Mesh::builder()
        .node_type("srv")
        .discovery(Discovery::local_registry(&reg))
        .max_concurrent_requests(2)
        .max_message_size(64 * 1024)
        .start()
        .await
        .unwrap();
    let b = node(&reg, "cli").await;
    let _slow = a
        .handle(
            1,
            handler(|_c: CallContext, ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }),
        )
        .unwrap();
    let _boom = a
        .handle(
            2,
            handler(|_c: CallContext, (): ()| async move {
                if std::hint::black_box(true) {
                    panic!("deliberate panic in a handler");
                }
            }),
        )
        .unwrap();
    let _typed = a
        .handle(
            3,
            handler(|_c: CallContext, (x, y): (i64, i64)| async move { x * y }),
        )
        .unwrap();
    let _big = a
        .handle(
            4,
            handler(|_c: CallContext, n: usize| async move { vec![7u8; n] }),
        )
        .unwrap();

    // No handler.
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, ()>(999, &())
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::NoHandler { command: 999, .. }),
        "{e}"
    );
    assert!(!e.may_have_run());

    // Panicked: the node keeps running.
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, ()>(2, &())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Panicked { message, .. } if message.contains("deliberate")),
        "{e}"
    );
    let ok: i64 = Client::for_node(a.id())
        .on(&b)
        .call(3, &(6i64, 7i64))
        .await
        .unwrap();
    assert_eq!(ok, 42);

    // Timeout at the deadline.
    let t = Instant::now();
    let e = Client::for_node(a.id())
        .on(&b)
        .with_timeout(Duration::from_millis(200))
        .call::<_, u64>(1, &5_000u64)
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(200));

    // A payload of the wrong shape: a codec error naming the stage, never a wrong value.
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, i64>(3, &"not two numbers".to_string())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Codec {
                stage: CodecStage::DecodeRequest,
                ..
            }
        ),
        "{e}"
    );
    // A response of another type than expected: decode error on our side.
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, String>(3, &(1i64, 2i64))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Codec {
                stage: CodecStage::DecodeResponse,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.may_have_run());

    // Incompatible: the fingerprints of the two sides differ.
    let _fp = a
        .serve(FingerprintedService(fingerprint("Svc::m(i64)->i64")))
        .unwrap();
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, i64>(
            Command::new(50).with_fingerprint(fingerprint("Svc::m(String)->i64")),
            &5i64,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Incompatible { reason: Incompatibility::Signature { service, method, .. }, .. } if service == "Svc" && method == "m"),
        "{e}"
    );
    let ok: i64 = Client::for_node(a.id())
        .on(&b)
        .call(
            Command::new(50).with_fingerprint(fingerprint("Svc::m(i64)->i64")),
            &5i64,
        )
        .await
        .unwrap();
    assert_eq!(ok, 6);

    // Too large: refused before sending; a too-large response is refused after running.
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, ()>(3, &vec![0u8; 100 * 1024])
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::TooLarge { ran: false, .. }), "{e}");
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, Vec<u8>>(4, &(100 * 1024usize))
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::TooLarge { ran: true, .. }), "{e}");

    // Overloaded: a holds 2 requests at once.
    let to_a = Client::for_node(a.id()).on(&b);
    let slow1 = to_a.call::<_, u64>(1, &600u64);
    let slow2 = to_a.call::<_, u64>(1, &600u64);
    let third = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Client::for_node(a.id())
            .on(&b)
            .call::<_, u64>(1, &1u64)
            .await
    };
    let (r1, r2, r3) = tokio::join!(slow1, slow2, third);
    assert_eq!((r1.unwrap(), r2.unwrap()), (600, 600));
    let e = r3.unwrap_err();
    assert!(matches!(e, CallError::Overloaded { .. }), "{e}");
    assert!(e.is_retryable() && !e.may_have_run());

    // Shutting down: while a drains a running request, new ones are refused (not run); the
    // running one completes.
    let running = tokio::spawn({
        let b = b.clone();
        let to = a.id();
        async move { Client::for_node(to).on(&b).call::<_, u64>(1, &500u64).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn({
        let a = a.clone();
        async move { a.stop().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = Client::for_node(a.id())
        .on(&b)
        .call::<_, i64>(3, &(1i64, 1i64))
        .await
        .unwrap_err();
    assert_eq!(e, CallError::ShuttingDown { side: Side::Remote });
    assert!(!e.may_have_run());
    assert_eq!(running.await.unwrap().unwrap(), 500);
    stopping.await.unwrap();
    // A client given a stopped mesh says so.
    let e = Client::for_node(b.id())
        .on(&a)
        .call::<_, i64>(3, &(1i64, 1i64))
        .await
        .unwrap_err();
    assert_eq!(e, CallError::NoMesh(NoMesh::Stopped));
    b.stop().await;
}

struct FingerprintedService(u32);

impl mesh_core::rpc::Service for FingerprintedService {
    fn name(&self) -> &'static str {
        "Svc"
    }
    fn methods(&self) -> Vec<mesh_core::rpc::Method> {
        vec![mesh_core::rpc::Method {
            id: 50,
            name: "m",
            fingerprint: self.0,
            handler: handler(|_c: CallContext, x: i64| async move { x + 1 }),
        }]
    }
}

#[tokio::test]
async fn deadline_travels_and_dropping_the_call_cancels_it_remotely() {
    let reg = LocalRegistry::new();
    let a = node(&reg, "srv").await;
    let b = node(&reg, "cli").await;
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let _h = a
        .handle(
            1,
            handler(move |ctx: CallContext, (): ()| {
                let tx = tx.clone();
                async move {
                    let remaining = ctx.remaining().unwrap_or_default();
                    let _ = tx.send(
                        if remaining > Duration::from_millis(1500)
                            && remaining <= Duration::from_secs(2)
                        {
                            "deadline ok"
                        } else {
                            "deadline wrong"
                        },
                    );
                    // Reports when the handler's future is dropped (cancelled).
                    struct OnDrop(mpsc::UnboundedSender<&'static str>);
                    impl Drop for OnDrop {
                        fn drop(&mut self) {
                            let _ = self.0.send("dropped");
                        }
                    }
                    let _g = OnDrop(tx.clone());
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }),
        )
        .unwrap();
    let client = Client::for_node(a.id())
        .on(&b)
        .with_timeout(Duration::from_secs(2));
    let call = client.call::<_, ()>(1, &());
    let r = tokio::time::timeout(Duration::from_millis(300), call).await;
    assert!(r.is_err(), "the call is still running when we drop it");
    assert_eq!(rx.recv().await, Some("deadline ok"));
    let dropped = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert_eq!(dropped.unwrap(), Some("dropped"));
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_calls() {
    let reg = LocalRegistry::new();
    let a = node(&reg, "srv").await;
    let b = node(&reg, "cli").await;
    let _h = a
        .handle(
            1,
            handler(|_c: CallContext, x: u32| async move { x.wrapping_mul(3) }),
        )
        .unwrap();
    let calls = (0..1000u32).map(|i| {
        let b = b.clone();
        let to = a.id();
        async move { (i, Client::for_node(to).on(&b).call::<_, u32>(1, &i).await) }
    });
    let results = futures::future::join_all(calls).await;
    for (i, r) in results {
        assert_eq!(r.unwrap(), i * 3);
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn send_usend_and_a_relay_to_twenty_nodes_with_limit_two() {
    let reg = LocalRegistry::new();
    let origin = node(&reg, "origin").await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, u32)>();
    let mut nodes = Vec::new();
    let mut guards = Vec::new();
    for _ in 0..20 {
        let m = node(&reg, "leaf").await;
        let me = m.id().to_string();
        let tx = tx.clone();
        guards.push(
            m.handle(
                7,
                handler(move |_c: CallContext, v: u32| {
                    let tx = tx.clone();
                    let me = me.clone();
                    async move {
                        let _ = tx.send((me, v));
                    }
                }),
            )
            .unwrap(),
        );
        nodes.push(m);
    }
    let ids: Vec<_> = nodes.iter().map(|m| m.id()).collect();
    Broadcast::to_nodes(ids.clone())
        .on(&origin)
        .with_limit(2)
        .send(7, &41u32)
        .await
        .unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    while seen.values().sum::<usize>() < 20 {
        let (who, v) = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, 41);
        *seen.entry(who).or_default() += 1;
    }
    // Nothing more arrives: each exactly once.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    );
    assert_eq!(seen.len(), 20);
    assert!(seen.values().all(|n| *n == 1));
    // Only two datagram destinations from the origin: the first hops.
    // Unreliable fan-out reaches them too on loopback.
    Broadcast::to_nodes(ids)
        .on(&origin)
        .with_limit(3)
        .usend(7, &42u32)
        .await
        .unwrap();
    let mut n = 0;
    while n < 20 {
        match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            Ok(Some((_, 42))) => n += 1,
            other => panic!("{other:?}"),
        }
    }
    // Single send and usend.
    Client::for_node(nodes[0].id())
        .on(&origin)
        .send(7, &1u32)
        .await
        .unwrap();
    Client::for_node(nodes[1].addr())
        .on(&origin)
        .usend(7, &2u32)
        .await
        .unwrap();
    let mut got = vec![rx.recv().await.unwrap().1, rx.recv().await.unwrap().1];
    got.sort();
    assert_eq!(got, vec![1, 2]);
    for m in nodes {
        m.stop().await;
    }
    origin.stop().await;
}

/// A one-way method of a service with a fingerprint, reporting what it got.
struct OneWayService {
    fingerprint: u32,
    label: &'static str,
    tx: mpsc::UnboundedSender<(&'static str, u32)>,
}

impl mesh_core::rpc::Service for OneWayService {
    fn name(&self) -> &'static str {
        "S"
    }
    fn methods(&self) -> Vec<mesh_core::rpc::Method> {
        let (label, tx) = (self.label, self.tx.clone());
        vec![mesh_core::rpc::Method {
            id: 60,
            name: "m",
            fingerprint: self.fingerprint,
            handler: handler(move |_c: CallContext, v: u32| {
                let _ = tx.send((label, v));
                async {}
            }),
        }]
    }
}

/// The untyped `Broadcast::send`/`usend` carry their fingerprint through the relay tree: a
/// node whose handler has another one refuses the message (counted) and still forwards it;
/// `send_many` (no fingerprint) reaches every handler as before.
#[tokio::test]
async fn untyped_broadcasts_carry_the_fingerprint_through_the_relay_tree() {
    let reg = LocalRegistry::new();
    let origin = node(&reg, "origin").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let fp = fingerprint("S::m(u32)->()");
    let mut nodes = Vec::new();
    let mut guards = Vec::new();
    for (label, f) in [
        ("other", fingerprint("S::m(u64)->()")),
        ("same", fp),
        ("unchecked", 0),
    ] {
        let m = node(&reg, "leaf").await;
        let tx = tx.clone();
        guards.push(
            m.serve(OneWayService {
                fingerprint: f,
                label,
                tx,
            })
            .unwrap(),
        );
        nodes.push(m);
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while nodes.iter().chain([&origin]).any(|m| m.nodes().len() < 4) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let other = &nodes[0];
    let ids: Vec<_> = nodes.iter().map(|m| m.id()).collect();
    let recv = async |rx: &mut mpsc::UnboundedReceiver<(&'static str, u32)>, n: usize| {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(
                tokio::time::timeout(Duration::from_secs(3), rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        got.sort();
        got
    };

    // A chain through the refusing node first: origin -> other -> same -> unchecked.
    mesh_core::rpc::Broadcast::to_nodes(ids.clone())
        .on(&origin)
        .with_limit(1)
        .send(Command::new(60).with_fingerprint(fp), &1u32)
        .await
        .unwrap();
    assert_eq!(recv(&mut rx, 2).await, vec![("same", 1), ("unchecked", 1)]);
    tokio::time::timeout(Duration::from_secs(3), async {
        while other.stats().rpc.incompatible < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(rx.try_recv().is_err());

    // Unreliable, repeated until it arrives (loopback may drop a datagram).
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 2 {
            mesh_core::rpc::Broadcast::to_type("leaf")
                .on(&origin)
                .usend(Command::new(60).with_fingerprint(fp), &2u32)
                .await
                .unwrap();
            while let Ok(Some((who, v))) =
                tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
            {
                assert_ne!(who, "other");
                assert_eq!(v, 2);
                seen.insert(who);
            }
        }
    })
    .await
    .unwrap();

    // The untyped API without a fingerprint: every handler runs it.
    Broadcast::to_nodes(ids)
        .on(&origin)
        .with_limit(1)
        .send(60, &3u32)
        .await
        .unwrap();
    let got = recv(&mut rx, 3).await;
    assert_eq!(got, vec![("other", 3), ("same", 3), ("unchecked", 3)]);
    for m in nodes {
        m.stop().await;
    }
    origin.stop().await;
}

#[tokio::test]
async fn balanced_calls_spread_evenly_and_skip_nodes_that_do_not_serve_or_are_taken() {
    let reg = LocalRegistry::new();
    let client = node(&reg, "client").await;
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let mut nodes = Vec::new();
    let mut guards = Vec::new();
    for i in 0..4usize {
        let m = node(&reg, "worker").await;
        if i < 3 {
            let counts = counts.clone();
            guards.push(
                m.handle(
                    5,
                    handler(move |_c: CallContext, (): ()| {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                        async move { i }
                    }),
                )
                .unwrap(),
            );
        }
        nodes.push(m);
    }
    client.wait_for_latest_view().await.unwrap();
    assert_eq!(client.nodes_serving("worker", 5).len(), 3);
    for _ in 0..300 {
        let _: usize = Client::for_type("worker")
            .on(&client)
            .call(5, &())
            .await
            .unwrap();
    }
    let c: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(c, vec![100, 100, 100, 0]);
    // A taken node takes no new work.
    nodes[0].set_status(NodeStatus::Taken);
    client.wait_for_latest_view().await.unwrap();
    for _ in 0..20 {
        let who: usize = Client::for_type("worker")
            .on(&client)
            .call(5, &())
            .await
            .unwrap();
        assert_ne!(who, 0);
    }
    // Broadcast collects every response; random picks a serving node.
    let all = Broadcast::to_nodes(nodes.iter().map(|m| m.id()))
        .on(&client)
        .call(5, &())
        .await
        .unwrap();
    let ok: Vec<usize> = all
        .iter()
        .filter_map(|(_, r): &(_, Result<usize, _>)| r.clone().ok())
        .collect();
    assert_eq!(ok.len(), 3);
    assert!(
        all.iter()
            .any(|(_, r)| matches!(r, Err(CallError::NoHandler { .. })))
    );
    let who: usize = Client::random_of_type("worker")
        .on(&client)
        .call(5, &())
        .await
        .unwrap();
    assert!(who < 3);
    let e = Client::for_type("nobody")
        .on(&client)
        .call::<_, usize>(5, &())
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::NoNode { .. }));
    for m in nodes {
        m.stop().await;
    }
    client.stop().await;
}

#[tokio::test]
async fn a_node_killed_mid_call_fails_its_callers_with_unreachable_not_timeout() {
    let reg = LocalRegistry::new();
    let me = node(&reg, "caller").await;
    let mut node = NodeProcess::spawn(&[("MESH_NODE_TYPE", "victim")]).unwrap();
    let target = node.id;
    let call = {
        let me = me.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = Client::for_node(target)
                .on(&me)
                .with_timeout(Duration::from_secs(10))
                .call::<_, u64>(2, &20_000u64)
                .await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.kill();
    let (r, took) = call.await.unwrap();
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Unreachable {
                reason: Unreachable::Transport(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        took < Duration::from_secs(5),
        "failed after {took:?}, long before the deadline"
    );
    me.stop().await;
}

#[tokio::test]
async fn a_restarted_node_is_reported_as_restarted() {
    let reg = LocalRegistry::new();
    let me = node(&reg, "caller").await;
    let port = mesh_tests::redis::free_port().unwrap().to_string();
    let mut first = NodeProcess::spawn(&[("MESH_PORT", port.as_str())]).unwrap();
    let old = first.id;
    let who: String = Client::for_node(old).on(&me).call(3, &()).await.unwrap();
    assert_eq!(who, old.to_string());
    first.kill();
    let second = NodeProcess::spawn(&[("MESH_PORT", port.as_str())]).unwrap();
    assert_eq!(
        second.id.addr, old.addr,
        "the new process took the same port"
    );
    // Calling the old incarnation: restarted, never a call to the wrong process.
    let mut saw = None;
    for _ in 0..3 {
        match Client::for_node(old)
            .on(&me)
            .call::<_, String>(3, &())
            .await
        {
            Err(e @ CallError::Restarted { .. }) => {
                saw = Some(e);
                break;
            }
            Err(CallError::Unreachable { .. }) => continue,
            other => panic!("{other:?}"),
        }
    }
    let e = saw.expect("restarted");
    assert!(
        matches!(e, CallError::Restarted { old: o, new: n, .. } if o == old.incarnation && n == second.id.incarnation)
    );
    // By address, the new one answers.
    let who: String = Client::for_node(old.addr)
        .on(&me)
        .call(3, &())
        .await
        .unwrap();
    assert_eq!(who, second.id.to_string());
    drop(second);
    me.stop().await;
}

#[tokio::test]
async fn raw_handlers_and_reserved_or_duplicate_ids() {
    let reg = LocalRegistry::new();
    let a = node(&reg, "srv").await;
    let b = node(&reg, "cli").await;
    let _raw = a
        .handle(
            1,
            raw_handler(|_c: CallContext, b: bytes::Bytes| async move { Ok(b) }),
        )
        .unwrap();
    assert!(matches!(
        a.handle(1, handler(|_c: CallContext, (): ()| async {})),
        Err(mesh_core::rpc::RegisterError::Duplicate { command: 1, .. })
    ));
    assert!(matches!(
        a.handle(65000, handler(|_c: CallContext, (): ()| async {})),
        Err(mesh_core::rpc::RegisterError::Reserved(65000))
    ));
    // Handlers come and go while the node runs.
    let g = a
        .handle(2, handler(|_c: CallContext, (): ()| async { 1u8 }))
        .unwrap();
    let one: u8 = Client::for_node(a.id()).on(&b).call(2, &()).await.unwrap();
    assert_eq!(one, 1);
    drop(g);
    assert!(matches!(
        Client::for_node(a.id()).on(&b).call::<_, u8>(2, &()).await,
        Err(CallError::NoHandler { .. })
    ));
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn each_call_times_out_at_its_own_deadline() {
    let reg = LocalRegistry::new();
    let a = node(&reg, "srv").await;
    let b = node(&reg, "cli").await;
    let _slow = a
        .handle(
            1,
            handler(|_c: CallContext, ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }),
        )
        .unwrap();
    // A long call is pending when shorter ones start: each still expires on time.
    let client = Client::for_node(a.id())
        .on(&b)
        .with_timeout(Duration::from_secs(5));
    let long = client.call::<_, u64>(1, &2_000u64);
    let short = async {
        let t = Instant::now();
        let r = Client::for_node(a.id())
            .on(&b)
            .with_timeout(Duration::from_millis(150))
            .call::<_, u64>(1, &2_000u64)
            .await;
        (r, t.elapsed())
    };
    let shorter = async {
        let t = Instant::now();
        let r = Client::for_node(a.id())
            .on(&b)
            .with_timeout(Duration::from_millis(50))
            .call::<_, u64>(1, &2_000u64)
            .await;
        (r, t.elapsed())
    };
    let (l, (s, st), (ss, sst)) = tokio::join!(long, short, shorter);
    assert_eq!(l.unwrap(), 2_000);
    assert!(s.unwrap_err().is_timeout() && ss.unwrap_err().is_timeout());
    assert!(
        st >= Duration::from_millis(150) && st < Duration::from_millis(1_000),
        "{st:?}"
    );
    assert!(
        sst >= Duration::from_millis(50) && sst < Duration::from_millis(1_000),
        "{sst:?}"
    );
    b.stop().await;
    a.stop().await;
}
