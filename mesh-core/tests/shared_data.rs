//! Cluster-wide shared data over real loopback meshes: concurrent writers on 20 nodes
//! converge to the owner's order, a late joiner holds the data at start, limits and wrong
//! types are refused, an owner's loss loses no acknowledged write, and a cut-off owner is
//! fenced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh_core::config::MeshConfig;
use mesh_core::shared_data::{DataError, DataEvent, DataRefusal};
use mesh_core::{Discovery, LocalRegistry, Mesh, NodeId};
use tokio::time::timeout;

mod common;

use common::{LIMIT, node};

async fn nodes(registry: &LocalRegistry, n: usize) -> Vec<Mesh> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(node(registry, "game").await);
    }
    for m in &out {
        see(m, n).await;
    }
    out
}

async fn see(m: &Mesh, n: usize) {
    timeout(LIMIT, async {
        while m.nodes().len() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the view settles");
}

/// Waits until every node holds `key` at the same version as `reference`.
async fn converged(nodes: &[Mesh], key: &str, version: u64) {
    for m in nodes {
        timeout(LIMIT, async {
            while m.shared_data().version(key) < version {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} holds {key} at {}", m.id(), m.shared_data().version(key)));
    }
}

/// The node owning `key` among `nodes` (the one whose stats count the ordered writes).
fn orderer(nodes: &[Mesh], before: &[u64]) -> usize {
    nodes
        .iter()
        .zip(before)
        .position(|(m, b)| m.shared_data().stats().ordered > *b)
        .expect("someone ordered it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_twenty_nodes_converge_to_the_owners_order() {
    let registry = LocalRegistry::new();
    let nodes = nodes(&registry, 20).await;
    let keys = ["a", "b", "c", "d"];
    let mut tasks = Vec::new();
    for (i, m) in nodes.iter().enumerate() {
        let data = m.shared_data();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for round in 0..5u32 {
                for k in keys {
                    got.push(data.set(k, &(i as u32, round)).await.unwrap());
                }
            }
            got
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.extend(timeout(LIMIT, t).await.unwrap().unwrap());
    }
    // Every write was ordered once: per key, versions 1..=100, each given once.
    versions.sort_unstable();
    let mut expected: Vec<u64> = (1..=100).flat_map(|v| [v; 4]).collect();
    expected.sort_unstable();
    assert_eq!(versions, expected);
    for k in keys {
        converged(&nodes, k, 100).await;
        let first: (u32, u32) = nodes[0].shared_data().get(k).unwrap().unwrap();
        for m in &nodes {
            assert_eq!(
                m.shared_data().get::<(u32, u32)>(k).unwrap(),
                Some(first),
                "{k}"
            );
            assert_eq!(m.shared_data().version(k), 100);
        }
    }
    assert_eq!(nodes[7].shared_data().keys(), vec!["a", "b", "c", "d"]);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_late_holds_the_data_when_it_starts() {
    let registry = LocalRegistry::new();
    let nodes = nodes(&registry, 3).await;
    for i in 0..600u32 {
        nodes[(i % 3) as usize]
            .shared_data()
            .set(&format!("k{i:04}"), &i)
            .await
            .unwrap();
    }
    nodes[1].shared_data().remove("k0007").await.unwrap();
    let late = node(&registry, "game").await;
    // No waiting: `start` returned with the data (more than two pages of it).
    let data = late.shared_data();
    assert_eq!(data.keys().len(), 599);
    assert_eq!(data.get::<u32>("k0599").unwrap(), Some(599));
    assert_eq!(data.get::<u32>("k0007").unwrap(), None);
    // And it hears of what comes next.
    let mut ev = data.events();
    nodes[0].shared_data().set("fresh", &1u8).await.unwrap();
    let e = timeout(LIMIT, async {
        loop {
            if let Some(e @ DataEvent::Updated { .. }) = ev.next().await {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(e, DataEvent::Updated { ref key, .. } if key == "fresh"),
        "{e:?}"
    );
    late.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let registry = LocalRegistry::new();
    let mut config = MeshConfig::default();
    config.shared_data.max_key_len = 8;
    config.shared_data.max_value_bytes = 16;
    config.shared_data.max_keys = 2;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(
            Mesh::builder()
                .config(config.clone())
                .discovery(Discovery::local_registry(&registry))
                .start()
                .await
                .unwrap(),
        );
    }
    see(&nodes[0], 2).await;
    see(&nodes[1], 2).await;
    let d = nodes[0].shared_data();
    let refusal = |r: Result<u64, DataError>| r.unwrap_err().refusal().cloned();
    assert_eq!(
        refusal(d.set("much-too-long", &1u8).await),
        Some(DataRefusal::KeyLength { len: 13, max: 8 })
    );
    assert_eq!(
        refusal(d.set("", &1u8).await),
        Some(DataRefusal::KeyLength { len: 0, max: 8 })
    );
    assert!(matches!(
        refusal(d.set("big", &vec![7u8; 40]).await),
        Some(DataRefusal::ValueTooLarge { max: 16, .. })
    ));
    d.set("one", &1u32).await.unwrap();
    d.set("two", &"2").await.unwrap();
    assert_eq!(
        refusal(d.set("three", &3u32).await),
        Some(DataRefusal::TooManyKeys { max: 2 })
    );
    // Wrong type on get: a clear error, the value stays.
    let e = d.get::<(u64, u64, u64)>("two").unwrap_err();
    assert!(matches!(e, DataError::Codec { .. }), "{e}");
    assert_eq!(d.get::<String>("two").unwrap(), Some("2".to_string()));
    // Nothing of the refused writes anywhere.
    converged(&nodes, "two", 1).await;
    for m in &nodes {
        assert_eq!(m.shared_data().keys(), vec!["one", "two"]);
        assert_eq!(m.shared_data().version("three"), 0);
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_lost_mid_writes_loses_no_acknowledged_write() {
    let registry = LocalRegistry::new();
    let mut nodes = nodes(&registry, 4).await;
    let key = "score";
    let before: Vec<u64> = nodes
        .iter()
        .map(|m| m.shared_data().stats().ordered)
        .collect();
    nodes[0].shared_data().set(key, &0u64).await.unwrap();
    let owner_at = orderer(&nodes, &before);
    let owner = nodes.remove(owner_at);
    let writer = nodes[0].shared_data();
    let mut acked = 0u64;
    for i in 1..=200u64 {
        if i == 60 {
            owner.stop().await;
        }
        if writer.set(key, &i).await.is_ok() {
            acked = i;
        }
    }
    assert_eq!(acked, 200, "writes go on at the new owner");
    let v = writer.version(key);
    converged(&nodes, key, v).await;
    for m in &nodes {
        assert_eq!(m.shared_data().get::<u64>(key).unwrap(), Some(200));
    }
    assert!(v > 200, "versions go on across owners: {v}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_off_is_fenced() {
    let registry = LocalRegistry::new();
    let mut nodes = nodes(&registry, 3).await;
    let key = "door";
    let before: Vec<u64> = nodes
        .iter()
        .map(|m| m.shared_data().stats().ordered)
        .collect();
    nodes[1].shared_data().set(key, &"closed").await.unwrap();
    let old = nodes.remove(orderer(&nodes, &before));
    let old_id: NodeId = old.id();
    // The owner is cut off: the others see it leave; it runs on, owner by its own view.
    registry.evict(old_id);
    see(&nodes[0], 2).await;
    see(&nodes[1], 2).await;
    nodes[0].shared_data().set(key, &"open").await.unwrap();
    let r = old.shared_data().set(key, &"welded").await;
    match r.as_ref().map_err(|e| e.refusal()) {
        Err(Some(DataRefusal::Fenced { epoch, .. })) => assert_eq!(*epoch, 2),
        other => panic!("expected fenced, got {other:?}"),
    }
    for m in &nodes {
        assert_eq!(
            m.shared_data().get::<String>(key).unwrap().as_deref(),
            Some("open")
        );
    }
    old.stop().await;
    for n in nodes {
        n.stop().await;
    }
}
