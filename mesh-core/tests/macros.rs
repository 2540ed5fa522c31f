//! `#[mesh_service]`: every kind of method end to end over real UDP on 127.0.0.1, signature
//! fingerprints, hygiene, and the compile errors (trybuild, `tests/compile_fail`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mesh_core::rpc::{CallContext, CallError, Incompatibility, RESERVED_START};
use mesh_core::{LocalRegistry, NodeId, Target, mesh_service};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;

use common::{LIMIT, node, wait_serving};

/// The remote error of `divide`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// Division by zero.
    DivByZero,
}

/// The service of the end-to-end test (public, so `missing_docs` checks the generated items).
#[mesh_service(id = 1000)]
pub trait Greeter {
    /// Says hello (1000).
    async fn hello(&self, name: String) -> String;
    /// Divides, or fails remotely (1001).
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// The caller's node id, from the context (1002).
    async fn who(&self, ctx: CallContext) -> Option<NodeId>;
    /// A pinned id.
    #[mesh(id = 1010)]
    async fn pinned(&self) -> u32;
    /// Reliable one-way (1004).
    #[mesh(oneway)]
    async fn notify(&self, ctx: CallContext, msg: String);
    /// Unreliable one-way (1005).
    #[mesh(unreliable)]
    async fn tick(&self, n: u64);
    /// Which server answered (1006).
    async fn label(&self) -> String;
    /// No arguments, no return value, but still a request (1007).
    async fn ping(&self);
    /// A default body runs when the implementation does not override it (1008).
    async fn twice(&self, x: u32) -> u32 {
        x * 2
    }
}

// A private service nobody uses: its generated items must not warn (dead code, visibility).
#[mesh_service(id = 5000)]
trait Unused {
    async fn a(&self, x: u32) -> Result<u32, String>;
    #[mesh(unreliable)]
    async fn b(&self);
}

// An empty service compiles (and serves nothing).
#[mesh_service(id = 5100)]
trait Empty {}

/// mesh-core under another path, as a crate re-exporting it would have it.
mod reexport {
    pub(crate) use ::mesh_core as core_again;
}

/// A service naming mesh-core through `crate = path`.
#[mesh_service(id = 5200, crate = crate::reexport::core_again)]
trait Elsewhere {
    async fn get(&self) -> u8;
}

struct Here;

impl Elsewhere for Here {
    async fn get(&self) -> u8 {
        42
    }
}

/// What the one-way handlers saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Notify {
        msg: String,
        oneway: bool,
        sender: Option<NodeId>,
    },
    Tick(u64),
}

struct MyGreeter {
    label: &'static str,
    seen: mpsc::UnboundedSender<Seen>,
    pings: AtomicU32,
}

impl Greeter for MyGreeter {
    async fn hello(&self, name: String) -> String {
        format!("hi {name}")
    }

    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivByZero)
    }

    async fn who(&self, ctx: CallContext) -> Option<NodeId> {
        ctx.sender_id()
    }

    async fn pinned(&self) -> u32 {
        7
    }

    async fn notify(&self, ctx: CallContext, msg: String) {
        let _ = self.seen.send(Seen::Notify {
            msg,
            oneway: ctx.is_oneway(),
            sender: ctx.sender_id(),
        });
    }

    async fn tick(&self, n: u64) {
        let _ = self.seen.send(Seen::Tick(n));
    }

    async fn label(&self) -> String {
        // Something held across an await: the future must still be Send.
        let s = self.label.to_string();
        tokio::task::yield_now().await;
        s
    }

    async fn ping(&self) {
        self.pings.fetch_add(1, Ordering::Relaxed);
    }
}

fn greeter(label: &'static str) -> (MyGreeter, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        MyGreeter {
            label,
            seen: tx,
            pings: AtomicU32::new(0),
        },
        rx,
    )
}

#[test]
fn ids_and_names_are_constants() {
    assert_eq!(GreeterClient::SERVICE_NAME, "Greeter");
    assert_eq!(GreeterClient::HELLO, 1000);
    assert_eq!(GreeterClient::DIVIDE, 1001);
    assert_eq!(GreeterClient::WHO, 1002);
    assert_eq!(GreeterClient::PINNED, 1010);
    assert_eq!(GreeterClient::NOTIFY, 1004);
    assert_eq!(GreeterClient::TICK, 1005);
    assert_eq!(GreeterClient::LABEL, 1006);
    assert_eq!(GreeterClient::PING, 1007);
    assert_eq!(GreeterClient::TWICE, 1008);
    // The fingerprint hashes the service, the method and the types (not the context).
    assert_eq!(
        GreeterClient::DIVIDE_FINGERPRINT,
        mesh_core::rpc::fingerprint("Greeter::divide(i64,i64)->Result<i64,MathError>")
    );
    assert_eq!(
        GreeterClient::WHO_FINGERPRINT,
        mesh_core::rpc::fingerprint("Greeter::who()->Option<NodeId>")
    );
    // The macro hard-codes the reserved range; it must agree with the runtime.
    assert_eq!(RESERVED_START, 65000);
    assert_eq!(u64::from(RESERVED_START), mesh_syntax::args::RESERVED_START);
    // mesh-build computes fingerprints with mesh-syntax's copy of the hash: they agree.
    for text in [
        "",
        "Greeter::who()->Option<NodeId>",
        "A::b(Vec<u8>)->()",
        "x",
    ] {
        assert_eq!(
            mesh_syntax::fingerprint(text),
            mesh_core::rpc::fingerprint(text)
        );
    }

    let (g, _rx) = greeter("x");
    let server = GreeterServer::new(g);
    use mesh_core::rpc::Service;
    assert_eq!(server.name(), "Greeter");
    let methods: BTreeMap<u16, (&str, u32)> = server
        .methods()
        .into_iter()
        .map(|m| (m.id, (m.name, m.fingerprint)))
        .collect();
    assert_eq!(methods.len(), 9);
    assert_eq!(
        methods[&1001],
        ("divide", GreeterClient::DIVIDE_FINGERPRINT)
    );
    assert_eq!(methods[&1010].0, "pinned");
}

/// Every kind of method between two nodes over UDP, then balanced, random and broadcast calls
/// over two servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_over_udp() {
    let registry = LocalRegistry::new();
    let a = node(&registry, "math").await;
    let b = node(&registry, "web").await;
    let (ga, mut seen_a) = greeter("a");
    let _serving_a = a.serve(GreeterServer::new(ga)).unwrap();
    wait_serving(&b, "math", GreeterClient::HELLO, 1).await;
    assert!(a.addr().ip().is_loopback());

    let c = GreeterClient::for_node(a.id())
        .on(&b)
        .with_timeout(Duration::from_secs(5));
    // A request.
    let hi: Result<String, CallError> = c.hello("bob".into()).await;
    assert_eq!(hi.unwrap(), "hi bob");
    // A fallible request: the value, then the remote error.
    let q: Result<i64, CallError<MathError>> = c.divide(7, 2).await;
    assert_eq!(q, Ok(3));
    let q = c.divide(1, 0).await;
    assert_eq!(q, Err(CallError::Remote(MathError::DivByZero)));
    // The context: the sender is the caller.
    assert_eq!(c.who().await.unwrap(), Some(b.id()));
    // A pinned id, no arguments; a unit request; a default body.
    assert_eq!(c.pinned().await.unwrap(), 7);
    c.ping().await.unwrap();
    assert_eq!(c.twice(21).await.unwrap(), 42);
    assert!(a.record().serves(1010));
    assert!(!a.record().serves(1003));

    // Reliable one-way: resolves on acknowledgement; the handler sees a one-way context.
    c.notify("news".into()).await.unwrap();
    let got = timeout(LIMIT, seen_a.recv()).await.unwrap().unwrap();
    assert_eq!(
        got,
        Seen::Notify {
            msg: "news".into(),
            oneway: true,
            sender: Some(b.id()),
        }
    );
    // Unreliable: one datagram per call; loopback may still drop one, so repeat until seen.
    let got = timeout(LIMIT, async {
        loop {
            c.tick(9).await.unwrap();
            if let Ok(Some(s)) = timeout(Duration::from_millis(200), seen_a.recv()).await {
                break s;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, Seen::Tick(9));

    // By address.
    let hi = GreeterClient::for_node(a.addr())
        .on(&b)
        .with_timeout(Duration::from_secs(5))
        .hello("dee".into())
        .await;
    assert_eq!(hi.unwrap(), "hi dee");

    // A second server of the same type: balanced calls alternate, broadcasts reach both.
    let d = node(&registry, "math").await;
    let (gd, _seen_d) = greeter("d");
    let _serving_d = d.serve(GreeterServer::new(gd)).unwrap();
    wait_serving(&b, "math", GreeterClient::LABEL, 2).await;

    let balanced = GreeterClient::for_type("math").on(&b);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..6 {
        *counts.entry(balanced.label().await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("a".to_string(), 3), ("d".to_string(), 3)])
    );
    let random = GreeterClient::random_of_type("math").on(&b);
    let l = random.label().await.unwrap();
    assert!(l == "a" || l == "d", "{l}");
    // No node of the type: an error, not a hang.
    let none = GreeterClient::for_type("nobody")
        .on(&b)
        .hello("x".into())
        .await;
    assert!(matches!(none, Err(CallError::NoNode { .. })), "{none:?}");

    let all = GreeterBroadcast::to_type("math")
        .on(&b)
        .with_timeout(Duration::from_secs(5))
        .hello("x".into())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let mut from: Vec<Target> = Vec::new();
    for (t, r) in all {
        assert_eq!(r.unwrap(), "hi x");
        from.push(t);
    }
    from.sort_by_key(|t| t.to_string());
    let mut want = vec![Target::from(a.id()), Target::from(d.id())];
    want.sort_by_key(|t| t.to_string());
    assert_eq!(from, want);

    let all = GreeterBroadcast::to_nodes([a.id(), d.id()])
        .on(&b)
        .divide(1, 0)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    for (_, r) in all {
        assert_eq!(r, Err(CallError::Remote(MathError::DivByZero)));
    }

    d.stop().await;
    b.stop().await;
    a.stop().await;
}

/// Version 1 of a service.
mod v1 {
    use mesh_core::mesh_service;

    /// A store.
    #[mesh_service(id = 4000, name = "Store")]
    pub trait StoreV1 {
        /// Stores a value.
        async fn put(&self, v: u32) -> u32;
        /// One-way.
        #[mesh(oneway)]
        async fn poke(&self, v: u32);
    }
}

/// Version 2 of the same service: same name, ids and method shapes, other types.
mod v2 {
    use mesh_core::mesh_service;

    /// A store.
    #[mesh_service(id = 4000, name = "Store")]
    pub(crate) trait StoreV2 {
        /// Stores a value (now a u64).
        async fn put(&self, v: u64) -> u32;
        /// One-way (now a string).
        #[mesh(oneway)]
        async fn poke(&self, v: String);
    }
}

struct Store {
    pokes: mpsc::UnboundedSender<u32>,
}

impl v1::StoreV1 for Store {
    async fn put(&self, v: u32) -> u32 {
        v + 1
    }

    async fn poke(&self, v: u32) {
        let _ = self.pokes.send(v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_signature_is_incompatible() {
    assert_eq!(v1::StoreV1Client::PUT, v2::StoreV2Client::PUT);
    assert_ne!(
        v1::StoreV1Client::PUT_FINGERPRINT,
        v2::StoreV2Client::PUT_FINGERPRINT
    );
    let registry = LocalRegistry::new();
    let a = node(&registry, "store").await;
    let b = node(&registry, "web").await;
    let (tx, mut pokes) = mpsc::unbounded_channel();
    let _serving = a
        .serve(v1::StoreV1Server::new(Store { pokes: tx }))
        .unwrap();

    // The same signature works.
    let same = v1::StoreV1Client::for_node(a.id()).on(&b);
    assert_eq!(same.put(1).await.unwrap(), 2);

    // Another signature is refused before the handler runs, naming the method.
    let other = v2::StoreV2Client::for_node(a.id()).on(&b);
    match other.put(1).await {
        Err(CallError::Incompatible {
            command,
            reason:
                Incompatibility::Signature {
                    service,
                    method,
                    sent,
                    served,
                },
            ..
        }) => {
            assert_eq!(command, 4000);
            assert_eq!((service.as_str(), method.as_str()), ("Store", "put"));
            assert_eq!(sent, v2::StoreV2Client::PUT_FINGERPRINT);
            assert_eq!(served, v1::StoreV1Client::PUT_FINGERPRINT);
        }
        r => panic!("expected Incompatible, got {r:?}"),
    }
    // A one-way message with another signature is dropped: the handler never sees it, while
    // the matching one arrives.
    other.poke("x".into()).await.unwrap();
    v1::StoreV1Client::for_node(a.id())
        .on(&b)
        .poke(5)
        .await
        .unwrap();
    assert_eq!(timeout(LIMIT, pokes.recv()).await.unwrap(), Some(5));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pokes.try_recv().is_err());

    b.stop().await;
    a.stop().await;
}

/// Serving the same service twice on one node fails at run time (duplicate ids); the
/// macro cannot see that.
#[tokio::test]
async fn serving_twice_is_a_register_error() {
    let registry = LocalRegistry::new();
    let a = node(&registry, "math").await;
    let (g1, _r1) = greeter("1");
    let (g2, _r2) = greeter("2");
    let _s = a.serve(GreeterServer::new(g1)).unwrap();
    let e = a.serve(GreeterServer::from_arc(Arc::new(g2))).unwrap_err();
    assert!(e.to_string().contains("Greeter::hello"), "{e}");
    a.stop().await;
}

/// The generated code names everything by absolute path: it compiles without the prelude and
/// next to items that shadow common names.
mod hygiene {
    #![no_implicit_prelude]
    #![allow(dead_code)]

    /// Shadows of what generated code must not pick up by accident.
    struct Result;
    struct Option;
    struct Vec;
    struct Arc;
    struct String;
    struct Box;
    trait Send {}
    trait Sync {}
    trait Future {}
    trait Clone {}
    mod core {}
    mod std {}
    mod mesh_core {}

    /// A service without the prelude.
    #[::mesh_core::mesh_service(id = 3000)]
    pub trait Clean {
        /// Echo.
        async fn echo(&self, v: ::std::string::String) -> ::std::string::String;
        /// Fallible.
        async fn check(&self, v: u32) -> ::core::result::Result<u32, ::std::string::String>;
        /// Context.
        async fn ctx(&self, ctx: ::mesh_core::rpc::CallContext) -> bool;
        /// One-way.
        #[mesh(oneway)]
        async fn ow(&self, v: u32);
        /// Unreliable, no arguments.
        #[mesh(unreliable)]
        async fn ur(&self);
        /// Arguments named like the generated code's own locals.
        async fn names(&self, inner: u32, svc: u32, ctx2: u32, mesh: u32, target: u32) -> u32;
    }

    pub(super) struct Impl;

    impl Clean for Impl {
        async fn echo(&self, v: ::std::string::String) -> ::std::string::String {
            v
        }
        async fn check(&self, v: u32) -> ::core::result::Result<u32, ::std::string::String> {
            ::core::result::Result::Ok(v)
        }
        async fn ctx(&self, ctx: ::mesh_core::rpc::CallContext) -> bool {
            ctx.is_oneway()
        }
        async fn ow(&self, _v: u32) {}
        async fn ur(&self) {}
        async fn names(&self, inner: u32, svc: u32, ctx2: u32, mesh: u32, target: u32) -> u32 {
            inner + svc + ctx2 + mesh + target
        }
    }

    pub(super) fn server() -> CleanServer<Impl> {
        CleanServer::new(Impl)
    }

    pub(super) fn client(mesh: &::mesh_core::Mesh, to: ::mesh_core::NodeId) -> CleanClient {
        CleanClient::for_node(to).on(mesh)
    }
}

#[tokio::test]
async fn crate_path_and_empty_services() {
    let registry = LocalRegistry::new();
    let a = node(&registry, "else").await;
    let _s = a.serve(ElsewhereServer::new(Here)).unwrap();
    struct Nothing;
    impl Empty for Nothing {}
    let _e = a.serve(EmptyServer::new(Nothing)).unwrap();
    assert_eq!(
        ElsewhereClient::for_node(a.id())
            .on(&a)
            .get()
            .await
            .unwrap(),
        42
    );
    a.stop().await;
}

#[tokio::test]
async fn hygiene_module_works() {
    let registry = LocalRegistry::new();
    let a = node(&registry, "clean").await;
    let b = node(&registry, "web").await;
    let _s = a.serve(hygiene::server()).unwrap();
    let c = hygiene::client(&b, a.id());
    assert_eq!(c.echo("e".into()).await.unwrap(), "e");
    assert_eq!(c.check(3).await.unwrap(), 3);
    assert!(!c.ctx().await.unwrap());
    assert_eq!(c.names(1, 2, 3, 4, 5).await.unwrap(), 15);
    c.ow(1).await.unwrap();
    c.ur().await.unwrap();
    b.stop().await;
    a.stop().await;
}

/// The compile errors, each with its expected message and span in `tests/compile_fail`.
#[test]
fn compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}

/// Byte vectors, carried as bytes by the generated code.
#[mesh_service(id = 5300)]
pub trait Blob {
    /// Reverses the bytes and appends `tag`.
    async fn flip(&self, data: Vec<u8>, tag: u8) -> Vec<u8>;
    /// The bytes back, or an error when empty.
    async fn check(&self, data: std::vec::Vec<u8>) -> Result<Vec<u8>, String>;
    /// The length (a byte vector in, a number out).
    async fn len(&self, data: Vec<core::primitive::u8>) -> u64;
}

struct MyBlob;
impl Blob for MyBlob {
    async fn flip(&self, mut data: Vec<u8>, tag: u8) -> Vec<u8> {
        data.reverse();
        data.push(tag);
        data
    }
    async fn check(&self, data: Vec<u8>) -> Result<Vec<u8>, String> {
        if data.is_empty() {
            Err("empty".into())
        } else {
            Ok(data)
        }
    }
    async fn len(&self, data: Vec<u8>) -> u64 {
        data.len() as u64
    }
}

/// The same `flip`, written by hand against the `(Vec<u8>, u8)` tuple serde visits byte by
/// byte: a node built without the bytes path understands one built with it.
struct HandFlip;
impl mesh_core::rpc::Service for HandFlip {
    fn name(&self) -> &'static str {
        BlobClient::SERVICE_NAME
    }
    fn methods(&self) -> Vec<mesh_core::rpc::Method> {
        vec![mesh_core::rpc::Method {
            id: BlobClient::FLIP,
            name: "flip",
            fingerprint: BlobClient::FLIP_FINGERPRINT,
            handler: mesh_core::rpc::handler(
                |_ctx: CallContext, (mut data, tag): (Vec<u8>, u8)| async move {
                    data.reverse();
                    data.push(tag);
                    data
                },
            ),
        }]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_vectors_round_trip_and_match_the_plain_encoding() {
    let registry = LocalRegistry::new();
    let a = node(&registry, "blob").await;
    let h = node(&registry, "hand").await;
    let b = node(&registry, "web").await;
    let _s = a.serve(BlobServer::new(MyBlob)).unwrap();
    let _h = h.serve(HandFlip).unwrap();
    wait_serving(&b, "blob", BlobClient::FLIP, 1).await;
    wait_serving(&b, "hand", BlobClient::FLIP, 1).await;

    let c = BlobClient::for_node(a.id()).on(&b);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut want = big.clone();
    want.reverse();
    want.push(9);
    assert_eq!(c.flip(big.clone(), 9).await.unwrap(), want);
    assert_eq!(c.flip(Vec::new(), 1).await.unwrap(), vec![1]);
    assert_eq!(c.check(vec![1, 2]).await.unwrap(), vec![1, 2]);
    assert_eq!(
        c.check(Vec::new()).await,
        Err(CallError::Remote("empty".to_string()))
    );
    assert_eq!(c.len(big.clone()).await.unwrap(), 200_000);

    // The generated client against the hand-written handler: same bytes on the wire.
    let hand = BlobClient::for_node(h.id()).on(&b);
    assert_eq!(hand.flip(big.clone(), 9).await.unwrap(), want);

    // Broadcast: one result per target, each a byte vector again.
    let all = BlobBroadcast::to_nodes([a.id(), h.id()])
        .on(&b)
        .flip(vec![1, 2, 3], 4)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    for (_, r) in all {
        assert_eq!(r.unwrap(), vec![3, 2, 1, 4]);
    }
    b.stop().await;
    h.stop().await;
    a.stop().await;
}
