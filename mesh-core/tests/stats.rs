//! `Mesh::node_stats`: one node reads another's counters over the tools command
//! `CMD_STATS`, within the access schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_core::rpc::{AccessRule, CallError, Client, handler};
use mesh_core::{CallContext, Discovery, LocalRegistry, Mesh};

async fn node(registry: &LocalRegistry, t: &str) -> Mesh {
    Mesh::builder()
        .node_type(t)
        .discovery(Discovery::local_registry(registry))
        .start()
        .await
        .unwrap()
}

/// A node reads another's stats and sees its counters grow after calls to it.
#[tokio::test]
async fn a_node_reads_another_nodes_stats_and_sees_them_grow() {
    let registry = LocalRegistry::new();
    let server = node(&registry, "math").await;
    let reader = node(&registry, "web").await;
    let _s = server
        .handle(
            1000,
            handler(|_ctx: CallContext, (x, y): (i64, i64)| async move { x + y }),
        )
        .unwrap();
    let before = reader.node_stats(server.addr()).await.unwrap();
    for i in 0..20i64 {
        let sum: i64 = Client::for_node(server.id())
            .on(&reader)
            .call(1000, &(i, 1i64))
            .await
            .unwrap();
        assert_eq!(sum, i + 1);
    }
    let after = reader.node_stats(server.id()).await.unwrap();
    assert!(
        after.transport.messages_received >= before.transport.messages_received + 20,
        "{before:?} -> {after:?}"
    );
    assert!(after.transport.messages_sent >= before.transport.messages_sent + 20);
    assert!(after.transport.bytes_in > before.transport.bytes_in);
    // The same figures as the node reads itself (which moved on only by the stats calls).
    let own = server.stats();
    assert!(own.transport.messages_received >= after.transport.messages_received);
    // As JSON, as the cluster page receives it.
    let j = serde_json::to_value(&after).unwrap();
    assert!(j["transport"]["messages_received"].as_u64().unwrap() >= 20);
    reader.stop().await;
    server.stop().await;
}

/// The access schema decides, as for the other tool commands: a node whose rules do not
/// let the caller's type call `mesh.tools` refuses it; a rule for it lets it in.
#[tokio::test]
async fn stats_obey_the_access_schema() {
    let registry = LocalRegistry::new();
    let server = Mesh::builder()
        .node_type("game")
        .discovery(Discovery::local_registry(&registry))
        .allow(AccessRule::service("ops", "mesh.tools"))
        .start()
        .await
        .unwrap();
    let ops = node(&registry, "ops").await;
    let bot = node(&registry, "bot").await;
    for m in [&ops, &bot] {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.node(m.addr()).is_none() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    ops.node_stats(server.addr()).await.unwrap();
    let e = bot.node_stats(server.addr()).await.unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Forbidden {
                command: mesh_core::rpc::CMD_STATS,
                ..
            }
        ),
        "{e}"
    );
    for m in [ops, bot, server] {
        m.stop().await;
    }
}
