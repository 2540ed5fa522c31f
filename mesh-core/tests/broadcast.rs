//! The one-way methods of a generated `<Trait>Broadcast` (`#[mesh(oneway)]`,
//! `#[mesh(unreliable)]`): sent once through the relay tree with the method's fingerprint,
//! over real UDP on 127.0.0.1 between nodes with in-process discovery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(missing_docs)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::rpc::CallContext;
use mesh_core::{LocalRegistry, Mesh, NodeId, Serving, mesh_service};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;

use common::{LIMIT, node, wait_serving};

/// A service for the one-way broadcasts.
#[mesh_service(id = 6000)]
pub trait Fan {
    /// Reliable one-way (6000); the context tells which node it came from.
    #[mesh(oneway)]
    async fn tick(&self, ctx: CallContext, n: u32);
    /// Unreliable one-way (6001).
    #[mesh(unreliable)]
    async fn blip(&self, n: u32);
}

/// The same service built with other argument types: same name and ids, other fingerprints.
mod fan_v2 {
    use mesh_core::mesh_service;

    /// `Fan` with a string where v1 has a number.
    #[mesh_service(id = 6000, name = "Fan")]
    pub trait FanV2 {
        /// Reliable one-way.
        #[mesh(oneway)]
        async fn tick(&self, n: String);
        /// Unreliable one-way.
        #[mesh(unreliable)]
        async fn blip(&self, n: String);
    }
}

/// One delivery: the receiving node's index, the method, the value and the node it came from.
type Delivery = (usize, &'static str, u32, SocketAddr);

struct FanNode {
    index: usize,
    tx: mpsc::UnboundedSender<Delivery>,
}

impl Fan for FanNode {
    async fn tick(&self, ctx: CallContext, n: u32) {
        let _ = self.tx.send((self.index, "tick", n, ctx.sender_addr()));
    }

    async fn blip(&self, n: u32) {
        let _ = self
            .tx
            .send((self.index, "blip", n, ([0, 0, 0, 0], 0).into()));
    }
}

/// Counts what reaches the incompatible node's handlers (nothing should).
struct FanV2Node {
    tx: mpsc::UnboundedSender<String>,
}

impl fan_v2::FanV2 for FanV2Node {
    async fn tick(&self, n: String) {
        let _ = self.tx.send(n);
    }

    async fn blip(&self, n: String) {
        let _ = self.tx.send(n);
    }
}

/// Waits until every mesh lists `n` nodes (a relay hop forwards only to nodes in its view).
async fn wait_views(meshes: &[&Mesh], n: usize) {
    timeout(LIMIT, async {
        while meshes.iter().any(|m| m.nodes().len() < n) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every node sees the others");
}

/// Starts `n` nodes of type "leaf" serving `Fan`, all reporting to one channel.
async fn fan_nodes(
    registry: &LocalRegistry,
    n: usize,
) -> (Vec<Mesh>, Vec<Serving>, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    let mut serving = Vec::new();
    for index in 0..n {
        let m = node(registry, "leaf").await;
        let tx = tx.clone();
        serving.push(m.serve(FanServer::new(FanNode { index, tx })).unwrap());
        nodes.push(m);
    }
    (nodes, serving, rx)
}

/// Receives `n` deliveries, each within the limit.
async fn deliveries(rx: &mut mpsc::UnboundedReceiver<Delivery>, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(timeout(LIMIT, rx.recv()).await.unwrap().unwrap());
    }
    out
}

/// A reliable one-way broadcast to 20 nodes with limit 2 reaches each exactly once, through a
/// tree in which no node sends more than two copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_broadcast_reaches_twenty_nodes_once_through_the_relay_tree() {
    let registry = LocalRegistry::new();
    let origin = node(&registry, "origin").await;
    let (nodes, _serving, mut rx) = fan_nodes(&registry, 20).await;
    let mut all: Vec<&Mesh> = nodes.iter().collect();
    all.push(&origin);
    wait_views(&all, 21).await;
    wait_serving(&origin, "leaf", FanClient::TICK, 20).await;

    let sent_before = origin.stats().transport.messages_sent;
    FanBroadcast::to_type("leaf")
        .on(&origin)
        .with_limit(2)
        .tick(41)
        .await
        .unwrap();
    let got = deliveries(&mut rx, 20).await;
    let receivers: BTreeSet<usize> = got.iter().map(|d| d.0).collect();
    assert_eq!(receivers.len(), 20, "a node got it twice: {got:?}");
    assert!(got.iter().all(|d| d.1 == "tick" && d.2 == 41), "{got:?}");
    // Every handler sees the node that started the broadcast as the sender, and the
    // origin itself sent two copies (its two next hops): the rest went through the tree.
    assert!(got.iter().all(|d| d.3 == origin.addr()), "{got:?}");
    assert_eq!(origin.stats().transport.messages_sent - sent_before, 2);

    // A second broadcast through the same tree (same targets, same order) is the quiet
    // window: a duplicate of the first one would have to trail a whole second traversal.
    let ids: Vec<NodeId> = origin
        .nodes_serving("leaf", FanClient::TICK)
        .iter()
        .map(|r| r.id)
        .collect();
    FanBroadcast::to_nodes(ids)
        .on(&origin)
        .with_limit(2)
        .tick(42)
        .await
        .unwrap();
    let got = deliveries(&mut rx, 20).await;
    assert!(got.iter().all(|d| d.2 == 42), "a late duplicate: {got:?}");
    let receivers: BTreeSet<usize> = got.iter().map(|d| d.0).collect();
    assert_eq!(receivers.len(), 20, "{got:?}");
    assert!(rx.try_recv().is_err());

    for m in nodes {
        m.stop().await;
    }
    origin.stop().await;
}

/// An unreliable one-way broadcast (usend through the relay tree) reaches every node on
/// loopback; a datagram may still be lost, so rounds repeat until each node saw one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreliable_broadcast_reaches_the_nodes() {
    let registry = LocalRegistry::new();
    let origin = node(&registry, "origin").await;
    let (nodes, _serving, mut rx) = fan_nodes(&registry, 8).await;
    let mut all: Vec<&Mesh> = nodes.iter().collect();
    all.push(&origin);
    wait_views(&all, 9).await;
    let ids: Vec<NodeId> = nodes.iter().map(|m| m.id()).collect();

    let mut seen: BTreeSet<usize> = BTreeSet::new();
    let mut round = 0u32;
    timeout(LIMIT, async {
        while seen.len() < nodes.len() {
            round += 1;
            FanBroadcast::to_nodes(ids.clone())
                .on(&origin)
                .with_limit(3)
                .blip(round)
                .await
                .unwrap();
            let wait = tokio::time::sleep(Duration::from_millis(500));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    d = rx.recv() => {
                        let (index, method, n, _) = d.unwrap();
                        assert_eq!(method, "blip");
                        assert!((1..=round).contains(&n), "{n}");
                        seen.insert(index);
                        if seen.len() == nodes.len() {
                            break;
                        }
                    }
                    _ = &mut wait => break,
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seen.len(), 8);

    // By type too (nodes serving the method), with the default limit.
    wait_serving(&origin, "leaf", FanClient::BLIP, 8).await;
    let got = timeout(LIMIT, async {
        loop {
            FanBroadcast::to_type("leaf")
                .on(&origin)
                .blip(1000)
                .await
                .unwrap();
            if let Ok(Some(d)) = timeout(Duration::from_millis(500), async {
                loop {
                    match rx.recv().await {
                        Some(d) if d.2 == 1000 => break Some(d),
                        Some(_) => {}
                        None => break None,
                    }
                }
            })
            .await
            {
                break d;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got.1, "blip");

    for m in nodes {
        m.stop().await;
    }
    origin.stop().await;
}

/// A node serving another signature of the method refuses the broadcast message as
/// incompatible (its handler never runs) and still forwards it to the rest of its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_node_drops_the_broadcast_and_forwards_it() {
    assert_eq!(FanClient::TICK, fan_v2::FanV2Client::TICK);
    assert_ne!(
        FanClient::TICK_FINGERPRINT,
        fan_v2::FanV2Client::TICK_FINGERPRINT
    );
    let registry = LocalRegistry::new();
    let origin = node(&registry, "origin").await;
    let bad = node(&registry, "leaf").await;
    let (bad_tx, mut bad_rx) = mpsc::unbounded_channel();
    let _bad_serving = bad
        .serve(fan_v2::FanV2Server::new(FanV2Node { tx: bad_tx }))
        .unwrap();
    let (nodes, _serving, mut rx) = fan_nodes(&registry, 3).await;
    let mut all: Vec<&Mesh> = nodes.iter().collect();
    all.extend([&origin, &bad]);
    wait_views(&all, 5).await;
    wait_serving(&origin, "leaf", FanClient::TICK, 4).await;
    let before = bad.stats().rpc;

    // A chain with the incompatible node first: origin -> bad -> 0 -> 1 -> 2.
    let mut chain = vec![bad.id()];
    chain.extend(nodes.iter().map(|m| m.id()));
    FanBroadcast::to_nodes(chain)
        .on(&origin)
        .with_limit(1)
        .tick(7)
        .await
        .unwrap();
    let got = deliveries(&mut rx, 3).await;
    // Past the incompatible node: every good node has it, from the origin.
    let receivers: BTreeSet<usize> = got.iter().map(|d| d.0).collect();
    assert_eq!(receivers.len(), 3, "{got:?}");
    assert!(got.iter().all(|d| d.3 == origin.addr()), "{got:?}");
    assert!(got.iter().all(|d| d.2 == 7));

    // By type, with the default limit: the good nodes get it, the bad one refuses it again.
    FanBroadcast::to_type("leaf")
        .on(&origin)
        .tick(8)
        .await
        .unwrap();
    let got = deliveries(&mut rx, 3).await;
    let receivers: BTreeSet<usize> = got.iter().map(|d| d.0).collect();
    assert_eq!(receivers.len(), 3, "{got:?}");
    assert!(got.iter().all(|d| d.2 == 8));

    // The refusals are counted once the bad node handled both copies; its handler never ran.
    timeout(LIMIT, async {
        while bad.stats().rpc.incompatible < before.incompatible + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the incompatible node counts its refusals");
    assert!(bad.stats().rpc.dropped_oneway >= before.dropped_oneway + 2);
    assert!(bad_rx.try_recv().is_err(), "the incompatible handler ran");
    assert!(rx.try_recv().is_err());

    for m in nodes {
        m.stop().await;
    }
    bad.stop().await;
    origin.stop().await;
}

/// Broadcasts from one node through the same tree arrive everywhere in the order they were
/// sent: every hop forwards a relay message before it handles the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_from_one_node_arrive_in_order_everywhere() {
    let registry = LocalRegistry::new();
    let origin = node(&registry, "origin").await;
    let (nodes, _serving, mut rx) = fan_nodes(&registry, 12).await;
    let mut all: Vec<&Mesh> = nodes.iter().collect();
    all.push(&origin);
    wait_views(&all, 13).await;
    wait_serving(&origin, "leaf", FanClient::TICK, 12).await;

    // Sent back to back (each leaves the origin when first polled, in order), so that
    // relay messages reach the hops in bursts.
    let fan = FanBroadcast::to_type("leaf").on(&origin).with_limit(2);
    let sends: Vec<_> = (0..40).map(|n| fan.tick(n)).collect();
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let got = deliveries(&mut rx, 12 * 40).await;
    for index in 0..12 {
        let seen: Vec<u32> = got.iter().filter(|d| d.0 == index).map(|d| d.2).collect();
        assert_eq!(seen, (0..40).collect::<Vec<u32>>(), "node {index}");
    }
}
