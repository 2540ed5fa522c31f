//! The cluster key through the whole stack: typed calls between keyed nodes, nodes with
//! another key or none locked out, key rotation on a live cluster under load, and the key
//! in the config file and the environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::config::MeshConfig;
use mesh_core::rpc::{CallError, Incompatibility};
use mesh_core::rudp::RejectReason;
use mesh_core::{ClusterKey, Discovery, KeyError, LocalRegistry, Mesh, mesh_service};

mod common;

use common::{LIMIT, wait_serving};

/// What the keyed nodes serve.
#[mesh_service(id = 700)]
pub trait Echo {
    /// 700.
    async fn echo(&self, n: u64) -> u64;
}

struct Server;

impl Echo for Server {
    async fn echo(&self, n: u64) -> u64 {
        n
    }
}

async fn keyed(registry: &LocalRegistry, key: Option<&ClusterKey>) -> Mesh {
    let mut b = Mesh::builder()
        .node_type("game")
        .discovery(Discovery::local_registry(registry))
        .peer_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(2));
    if let Some(k) = key {
        b = b.cluster_key(k.clone());
    }
    b.start().await.unwrap()
}

async fn wait_listed(m: &Mesh, at: std::net::SocketAddr) {
    tokio::time::timeout(LIMIT, async {
        while m.node(at).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

/// Keyed nodes call each other; a node with another key times out in the handshake and is
/// counted by the server, and a node without a key is told the server requires one.
#[tokio::test]
async fn only_nodes_with_the_key_get_in() {
    let registry = LocalRegistry::new();
    let key = ClusterKey::generate();
    let server = keyed(&registry, Some(&key)).await;
    let _s = server.serve(EchoServer::new(Server)).unwrap();
    let member = keyed(&registry, Some(&key)).await;
    let stranger = keyed(&registry, Some(&ClusterKey::generate())).await;
    let keyless = keyed(&registry, None).await;
    wait_serving(&member, "game", 700, 1).await;
    let at = server.addr();
    // The others list the server (discovery is in-process here) but cannot reach it.
    for m in [&stranger, &keyless] {
        wait_listed(m, at).await;
    }
    for n in 0..20 {
        assert_eq!(
            EchoClient::for_node(at).on(&member).echo(n).await.unwrap(),
            n
        );
    }
    let e = EchoClient::for_node(at)
        .on(&stranger)
        .echo(1)
        .await
        .unwrap_err();
    assert!(!e.may_have_run(), "{e}");
    assert!(
        matches!(e, CallError::Unreachable { .. } | CallError::Timeout { .. }),
        "{e}"
    );
    let e = EchoClient::for_node(at)
        .on(&keyless)
        .echo(1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Incompatible {
                reason: Incompatibility::Transport(RejectReason::KeyRequired),
                ..
            }
        ),
        "{e}"
    );
    let drops = server.stats().transport.drops;
    assert!(drops.bad_auth > 0, "{drops:?}");
    assert!(drops.unauthenticated > 0, "{drops:?}");
    assert_eq!(server.stats().rpc.dropped_oneway, 0);
    // The member's session was never disturbed.
    assert_eq!(
        EchoClient::for_node(at).on(&member).echo(99).await.unwrap(),
        99
    );
    for m in [member, stranger, keyless, server] {
        m.stop().await;
    }
}

/// Install, switch, remove on three live nodes calling each other all along: no call fails,
/// a node with only the new key joins, and one with only the old key is then locked out.
#[tokio::test]
async fn keys_rotate_on_a_live_cluster_with_no_failed_call() {
    let registry = LocalRegistry::new();
    let old = ClusterKey::generate();
    let new = ClusterKey::generate();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let m = keyed(&registry, Some(&old)).await;
        let s = m.serve(EchoServer::new(Server)).unwrap();
        nodes.push((m, s));
    }
    for (m, _) in &nodes {
        wait_serving(m, "game", 700, 3).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for (i, (m, _)) in nodes.iter().enumerate() {
        let m = m.clone();
        let peers: Vec<_> = nodes.iter().map(|(p, _)| p.addr()).collect();
        let (stop, ok) = (stop.clone(), ok.clone());
        load.push(tokio::spawn(async move {
            let mut n = i as u64;
            while !stop.load(Ordering::Relaxed) {
                for &p in &peers {
                    let r = EchoClient::for_node(p).on(&m).echo(n).await;
                    assert_eq!(r.unwrap(), n, "a call failed during the rotation");
                    ok.fetch_add(1, Ordering::Relaxed);
                    n += 3;
                }
            }
        }));
    }
    let calls_since = |seen: u64| {
        let ok = ok.clone();
        async move {
            tokio::time::timeout(LIMIT, async {
                while ok.load(Ordering::Relaxed) < seen + 30 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap();
        }
    };
    calls_since(0).await;
    for (m, _) in &nodes {
        m.install_key(new.clone()).unwrap();
    }
    calls_since(ok.load(Ordering::Relaxed)).await;
    let late = keyed(&registry, Some(&new)).await;
    wait_serving(&late, "game", 700, 3).await;
    for (m, _) in &nodes {
        assert_eq!(
            EchoClient::for_node(m.addr())
                .on(&late)
                .echo(5)
                .await
                .unwrap(),
            5
        );
    }
    for (m, _) in &nodes {
        m.use_key(new.id()).unwrap();
        assert_eq!(m.key_ids(), vec![new.id(), old.id()]);
    }
    calls_since(ok.load(Ordering::Relaxed)).await;
    for (m, _) in &nodes {
        m.remove_key(old.id()).unwrap();
        assert_eq!(m.remove_key(old.id()), Err(KeyError::Unknown(old.id())));
    }
    calls_since(ok.load(Ordering::Relaxed)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let locked_out = keyed(&registry, Some(&old)).await;
    wait_listed(&locked_out, nodes[0].0.addr()).await;
    let e = EchoClient::for_node(nodes[0].0.addr())
        .on(&locked_out)
        .echo(1)
        .await
        .unwrap_err();
    assert!(!e.may_have_run(), "{e}");
    assert!(nodes[0].0.stats().transport.drops.bad_auth > 0);
    for (m, _) in &nodes {
        assert_eq!(m.use_key(old.id()), Err(KeyError::Unknown(old.id())));
    }
    let unkeyed = keyed(&registry, None).await;
    assert_eq!(unkeyed.install_key(new.clone()), Err(KeyError::NoKeyring));
    for m in [late, locked_out, unkeyed] {
        m.stop().await;
    }
    for (m, s) in nodes {
        drop(s);
        m.stop().await;
    }
}

/// The key reads from the config file and `MESH_CLUSTER_KEY`; a bad one is refused with
/// the field named and without echoing the secret.
#[test]
fn the_key_comes_from_the_config_file_and_the_environment() {
    let key = ClusterKey::generate();
    let text = format!("cluster_key = \"{}\"\n", key.to_hex());
    let cfg: MeshConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.cluster_key, Some(key.clone()));
    assert!(
        !format!("{cfg:?}").contains(&key.to_hex()),
        "Debug shows the key"
    );

    let secretish = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeZ";
    let e = MeshConfig::default()
        .apply_env([("MESH_CLUSTER_KEY", secretish)])
        .unwrap_err();
    assert!(e.to_string().contains("MESH_CLUSTER_KEY"), "{e}");
    assert!(!e.to_string().contains(secretish), "{e}");

    let other = ClusterKey::generate();
    let cfg = MeshConfig::default()
        .apply_env([
            ("MESH_CLUSTER_KEY", key.to_hex()),
            ("MESH_ACCEPT_KEYS", format!("{},", other.to_hex())),
        ])
        .unwrap();
    assert_eq!(cfg.accept_keys, vec![other.clone()]);
    assert!(cfg.validate().is_ok());

    let bad = format!("accept_keys = [\"{}\"]\n", other.to_hex());
    let cfg: MeshConfig = toml::from_str(&bad).unwrap();
    let e = cfg.validate().unwrap_err();
    assert!(e.to_string().contains("accept_keys"), "{e}");

    let e = toml::from_str::<MeshConfig>("cluster_key = \"abc\"\n").unwrap_err();
    assert!(e.to_string().contains("64 hex digits"), "{e}");
}

/// Strict membership (on with a key): a node holding the key but not listed (a guest) is
/// not read at all, a listed one is; a node started with `strict_membership(false)` reads
/// the guest; strict membership with the seeds backend is refused at start.
#[tokio::test]
async fn with_a_key_only_listed_nodes_are_read() {
    let registry = LocalRegistry::new();
    let key = ClusterKey::generate();
    let strict = keyed(&registry, Some(&key)).await;
    let _s = strict.serve(EchoServer::new(Server)).unwrap();
    let open = Mesh::builder()
        .node_type("game")
        .discovery(Discovery::local_registry(&registry))
        .cluster_key(key.clone())
        .strict_membership(false)
        .start()
        .await
        .unwrap();
    let _o = open.serve(EchoServer::new(Server)).unwrap();
    let guest = Mesh::builder()
        .node_type("game")
        .discovery(Discovery::local_registry(&registry))
        .cluster_key(key.clone())
        .guest(true)
        .peer_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let member = keyed(&registry, Some(&key)).await;
    wait_serving(&member, "game", 700, 2).await;
    assert_eq!(
        EchoClient::for_node(strict.addr())
            .on(&member)
            .echo(1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        EchoClient::for_node(open.addr())
            .on(&guest)
            .echo(2)
            .await
            .unwrap(),
        2
    );
    let e = EchoClient::for_node(strict.addr())
        .on(&guest)
        .echo(3)
        .await
        .unwrap_err();
    assert!(e.is_unreachable() && !e.may_have_run(), "{e}");
    assert!(strict.stats().transport.drops.not_member > 0);
    assert_eq!(strict.stats().transport.drops.bad_auth, 0);
    assert_eq!(open.stats().transport.drops.not_member, 0);

    let seeds = Mesh::builder()
        .discovery(Discovery::seeds(["127.0.0.1:1"]))
        .cluster_key(key.clone())
        .strict_membership(true)
        .start()
        .await;
    let e = seeds.err().unwrap();
    assert!(e.to_string().contains("strict_membership"), "{e}");
    for m in [guest, member, open, strict] {
        m.stop().await;
    }
}
