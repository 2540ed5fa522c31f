//! The access schema: which node types may call which services or command ranges.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(missing_docs)]

use std::time::Duration;

use mesh_core::config::MeshConfig;
use mesh_core::rpc::{AccessRule, CallError};
use mesh_core::{Discovery, LocalRegistry, Mesh, mesh_service};
use tokio::sync::mpsc;

mod common;

use common::{LIMIT, node, wait_serving};

/// What lobbies may call.
#[mesh_service(id = 100)]
pub trait Greeter {
    /// 100.
    async fn hello(&self, name: String) -> String;
    /// 101, one-way.
    #[mesh(oneway)]
    async fn wave(&self, n: u32);
}

/// What only admins may call.
#[mesh_service(id = 300)]
pub trait Ops {
    /// 300.
    async fn reset(&self) -> u32;
}

struct Server(mpsc::UnboundedSender<u32>);

impl Greeter for Server {
    async fn hello(&self, name: String) -> String {
        format!("hello {name}")
    }

    async fn wave(&self, n: u32) {
        let _ = self.0.send(n);
    }
}

impl Ops for Server {
    async fn reset(&self) -> u32 {
        7
    }
}

/// A node with rules serves only what they allow: lobbies the `Greeter` service, admins
/// command 300; everyone else (and every other command) gets `Forbidden`, and a refused
/// one-way message does not run.
#[tokio::test]
async fn callers_get_what_the_schema_allows_and_forbidden_otherwise() {
    let registry = LocalRegistry::new();
    let server = Mesh::builder()
        .node_type("game")
        .discovery(Discovery::local_registry(&registry))
        .allow(AccessRule::service("lobby", "Greeter"))
        .allow(AccessRule::commands("admin", 300..=300))
        .start()
        .await
        .unwrap();
    let (tx, mut waves) = mpsc::unbounded_channel();
    let _g = server
        .serve(GreeterServer::new(Server(tx.clone())))
        .unwrap();
    let _o = server.serve(OpsServer::new(Server(tx))).unwrap();
    let lobby = node(&registry, "lobby").await;
    let admin = node(&registry, "admin").await;
    let bot = node(&registry, "bot").await;
    for m in [&lobby, &admin, &bot] {
        wait_serving(m, "game", 300, 1).await;
        // The server must list the caller too, to know its type.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while server.node(m.addr()).is_none() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let at = server.addr();
    let greet = async |m: &Mesh| GreeterClient::for_node(at).on(m).hello("x".into()).await;
    assert_eq!(greet(&lobby).await.unwrap(), "hello x");
    assert!(matches!(
        greet(&admin).await,
        Err(CallError::Forbidden { command: 100, .. })
    ));
    assert!(matches!(
        greet(&bot).await,
        Err(CallError::Forbidden { command: 100, .. })
    ));
    assert_eq!(OpsClient::for_node(at).on(&admin).reset().await.unwrap(), 7);
    let e = OpsClient::for_node(at)
        .on(&lobby)
        .reset()
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::Forbidden { command: 300, .. }),
        "{e}"
    );
    assert!(!e.may_have_run());
    assert!(e.to_string().contains("access schema"), "{e}");
    // One-way: the bot's wave is dropped, the lobby's runs.
    let before = server.stats().rpc.dropped_oneway;
    GreeterClient::for_node(at).on(&bot).wave(1).await.unwrap();
    GreeterClient::for_node(at)
        .on(&lobby)
        .wave(2)
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(LIMIT, waves.recv()).await.unwrap(),
        Some(2)
    );
    assert_eq!(server.stats().rpc.dropped_oneway, before + 1);
    // The server calls itself freely.
    assert_eq!(
        OpsClient::for_node(at).on(&server).reset().await.unwrap(),
        7
    );
    for m in [lobby, admin, bot, server] {
        m.stop().await;
    }
}

/// A rule that names neither commands nor a service, or a reversed range, is refused at
/// start with the field named; the schema reads from a config file.
#[test]
fn bad_rules_are_refused_and_the_config_file_carries_the_schema() {
    let text = r#"
node_type = "game"
access = [{ caller = "lobby", commands = [1000, 1099] }, { caller = "admin", service = "Ops" }]
"#;
    let cfg: MeshConfig = toml::from_str(text).unwrap();
    assert_eq!(cfg.access.rules().len(), 2);
    assert!(cfg.validate().is_ok());
    for bad in [
        r#"access = [{ caller = "lobby" }]"#,
        r#"access = [{ caller = "lobby", commands = [9, 3] }]"#,
        r#"access = [{ caller = "", service = "S" }]"#,
    ] {
        let cfg: MeshConfig = toml::from_str(bad).unwrap();
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.field, "access", "{bad}: {e}");
    }
}
