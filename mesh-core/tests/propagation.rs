//! Deadlines, cancellation and the trace travel across hops: a call from A to B whose
//! handler calls C. Real nodes over UDP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use mesh_core::rpc::{CallContext, CallError, Client, TraceContext, current_trace, handler};
use mesh_core::{LocalRegistry, Mesh};
use tokio::sync::mpsc;
use tokio::time::timeout;

use common::{LIMIT, node};

/// What C saw: its trace context and the time left before its caller's deadline.
type Seen = (TraceContext, Duration);

/// C (command 3): reports what it saw. B (command 2): reports its own trace and C's answer.
fn chain(b: &Mesh, c: &Mesh) -> Vec<mesh_core::Serving> {
    let c_serving = c
        .handle(
            3,
            handler(|ctx: CallContext, (): ()| async move {
                (ctx.trace().unwrap(), ctx.remaining().unwrap())
            }),
        )
        .unwrap();
    let (mesh_b, c_id) = (b.clone(), c.id());
    let b_serving = b
        .handle(
            2,
            handler(move |ctx: CallContext, (): ()| {
                let to_c = Client::for_node(c_id).on(&mesh_b);
                async move {
                    // The handler runs inside its caller's trace.
                    assert_eq!(current_trace(), ctx.trace());
                    let from_c: Seen = to_c.call(3, &()).await.unwrap();
                    (ctx.trace().unwrap(), from_c)
                }
            }),
        )
        .unwrap();
    vec![c_serving, b_serving]
}

#[tokio::test]
async fn one_trace_and_the_callers_deadline_across_three_nodes() {
    let registry = LocalRegistry::new();
    let (a, b, c) = (
        node(&registry, "a").await,
        node(&registry, "b").await,
        node(&registry, "c").await,
    );
    let _serving = chain(&b, &c);
    let to_b = Client::for_node(b.id())
        .on(&a)
        .with_timeout(Duration::from_millis(800));

    let (at_b, (at_c, c_left)): (TraceContext, Seen) = to_b.call(2, &()).await.unwrap();
    // One trace id on every hop; each hop has its own calling span.
    assert_eq!(at_b.trace_id, at_c.trace_id);
    assert_ne!(at_b.parent_id, at_c.parent_id);
    assert_ne!(at_b.parent_id, 0);
    assert_eq!(at_b.flags & 1, 1);
    // B's call to C set no timeout (the default is 3 s): it inherited what was left of A's.
    assert!(c_left <= Duration::from_millis(800), "{c_left:?}");
    assert!(c_left > Duration::ZERO);

    // Another top-level call is another trace.
    let (again, _): (TraceContext, Seen) = to_b.call(2, &()).await.unwrap();
    assert_ne!(again.trace_id, at_b.trace_id);

    // An explicit timeout shorter than the caller's is kept.
    let (_, (_, c_left)): (TraceContext, Seen) = Client::for_node(b.id())
        .on(&a)
        .with_timeout(Duration::from_secs(30))
        .call(2, &())
        .await
        .unwrap();
    assert!(
        c_left <= Duration::from_secs(3),
        "the default applies: {c_left:?}"
    );
    assert!(c_left > Duration::from_secs(1), "{c_left:?}");

    for m in [a, b, c] {
        m.stop().await;
    }
}

/// Signals when dropped (a handler's future was dropped: it was cancelled).
struct OnDrop(Option<mpsc::UnboundedSender<&'static str>>, &'static str);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(self.1);
        }
    }
}

#[tokio::test]
async fn a_dropped_top_call_cancels_the_bottom_handler() {
    let registry = LocalRegistry::new();
    let (a, b, c) = (
        node(&registry, "a").await,
        node(&registry, "b").await,
        node(&registry, "c").await,
    );
    let (events, mut seen) = mpsc::unbounded_channel();
    // C (command 4): starts, then waits for ever; says when its future is dropped.
    let tx = events.clone();
    let _c = c
        .handle(
            4,
            handler(move |_ctx: CallContext, (): ()| {
                let tx = tx.clone();
                async move {
                    let _guard = OnDrop(Some(tx.clone()), "c dropped");
                    let _ = tx.send("c started");
                    std::future::pending::<()>().await;
                }
            }),
        )
        .unwrap();
    // B (command 5): calls C with no timeout of its own.
    let (mesh_b, c_id, tx) = (b.clone(), c.id(), events.clone());
    let _b = b
        .handle(
            5,
            handler(move |_ctx: CallContext, (): ()| {
                let to_c = Client::for_node(c_id).on(&mesh_b);
                let tx = tx.clone();
                async move {
                    let _guard = OnDrop(Some(tx), "b dropped");
                    let r: Result<(), CallError> = to_c.call(4, &()).await;
                    r.is_ok()
                }
            }),
        )
        .unwrap();

    // A calls B with a deadline far in the future, and gives up once C runs.
    let to_b = Client::for_node(b.id())
        .on(&a)
        .with_timeout(Duration::from_secs(60));
    let call = to_b.call::<_, bool>(5, &());
    tokio::select! {
        r = call => panic!("the call cannot finish: {r:?}"),
        s = seen.recv() => assert_eq!(s, Some("c started")),
    }
    // The top call's future is dropped here: B's handler is cancelled, which drops its call
    // to C, which cancels C's handler, long before any deadline (60 s, and C inherited it).
    let mut dropped = Vec::new();
    timeout(LIMIT, async {
        while dropped.len() < 2 {
            dropped.push(seen.recv().await.unwrap());
        }
    })
    .await
    .expect("both handlers are cancelled");
    dropped.sort_unstable();
    assert_eq!(dropped, ["b dropped", "c dropped"]);

    for m in [a, b, c] {
        m.stop().await;
    }
}

/// The cancel of a large request (over 16 KiB: it travels on the bulk channel) follows the
/// request instead of overtaking it on the small-message channel: a call dropped right
/// after it was queued never leaves its handler running (security finding 10).
#[tokio::test]
async fn a_large_request_dropped_at_once_is_still_cancelled() {
    let registry = LocalRegistry::new();
    let (a, b) = (node(&registry, "a").await, node(&registry, "b").await);
    let (events, mut seen) = mpsc::unbounded_channel();
    let _h = b
        .handle(
            6,
            handler(move |_ctx: CallContext, _big: Vec<u8>| {
                let tx = events.clone();
                async move {
                    let _guard = OnDrop(Some(tx.clone()), "dropped");
                    let _ = tx.send("started");
                    std::future::pending::<()>().await;
                }
            }),
        )
        .unwrap();
    let to_b = Client::for_node(b.id())
        .on(&a)
        .with_timeout(Duration::from_secs(60));
    let big = vec![1u8; 200 * 1024];
    // Poll the call until its request is queued, then drop it.
    let call = to_b.call::<_, ()>(6, &big);
    let r = timeout(Duration::from_millis(1), call).await;
    assert!(r.is_err(), "the call cannot finish: {r:?}");
    // If the request ran, its handler is cancelled (not left to its 60 s deadline).
    let first = timeout(Duration::from_secs(2), seen.recv()).await;
    if let Ok(Some(s)) = first {
        assert_eq!(s, "started");
        let then = timeout(LIMIT, seen.recv()).await;
        assert_eq!(
            then.ok().flatten(),
            Some("dropped"),
            "the handler was left running"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// A call a node makes to itself keeps its deadline: a handler that takes longer fails the
/// call as a timeout at the deadline (it used to wait for the handler, however long).
#[tokio::test]
async fn a_call_to_this_node_times_out_at_its_deadline() {
    let registry = LocalRegistry::new();
    let a = node(&registry, "a").await;
    let _slow = a
        .handle(
            9,
            handler(|_ctx: CallContext, (): ()| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                0u32
            }),
        )
        .unwrap();
    let started = tokio::time::Instant::now();
    let r: Result<u32, _> = timeout(
        LIMIT,
        Client::for_node(a.id())
            .on(&a)
            .with_timeout(Duration::from_millis(200))
            .call(9, &()),
    )
    .await
    .unwrap();
    assert!(matches!(r, Err(CallError::Timeout { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    a.stop().await;
}
