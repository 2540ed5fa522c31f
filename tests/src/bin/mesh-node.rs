//! A mesh node process for multi-process tests: configured entirely by `MESH_*` environment
//! variables (see `mesh_core::config::ENV_VARS`), it serves a few test commands, prints
//! `READY <node-id>` once started, and stops gracefully (printing `STOPPED`) when its stdin
//! closes. Tests `kill -9` it to simulate a crash.
//!
//! Commands served:
//! * 1: echo (`Vec<u8>` -> the same bytes);
//! * 2: sleep (`u64` milliseconds, then answers the same number);
//! * 3: whoami (`()` -> this node's id as a string);
//! * 4: hop (`Vec<String>` of node addresses -> how many hops ran): calls hop on the first
//!   address with the rest, so one call crosses every listed node in turn.
//!
//! With `MESH_TEST_OTLP` set to an OTLP/HTTP traces URL, it exports its spans there
//! (service name `MESH_TEST_SERVICE`), flushing them when it stops.

use std::io::Write;
use std::time::Duration;

use mesh_core::Mesh;
use mesh_core::config::MeshConfig;
use mesh_core::rpc::{CallContext, Client, fallible_handler, handler};
use tokio::io::AsyncReadExt;

/// Echo command id.
const ECHO: u16 = 1;
/// Sleep command id.
const SLEEP: u16 = 2;
/// Whoami command id.
const WHOAMI: u16 = 3;
/// Hop command id.
const HOP: u16 = 4;

#[tokio::main]
async fn main() {
    let _traces = match std::env::var("MESH_TEST_OTLP") {
        Ok(endpoint) => {
            let service = std::env::var("MESH_TEST_SERVICE").unwrap_or_else(|_| "mesh-node".into());
            match mesh_core::telemetry::Otlp::http(endpoint)
                .service_name(service)
                .install()
            {
                Ok(g) => Some(g),
                Err(e) => {
                    eprintln!("mesh-node: {e}");
                    std::process::exit(5);
                }
            }
        }
        Err(_) => None,
    };
    if _traces.is_none() && std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let config = match MeshConfig::default().with_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesh-node: {e}");
            std::process::exit(2);
        }
    };
    let mesh = match Mesh::builder().config(config).start().await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mesh-node: start failed: {e}");
            std::process::exit(3);
        }
    };
    let id = mesh.id().to_string();
    let served = [
        mesh.handle(
            ECHO,
            handler(|_c: CallContext, b: Vec<u8>| async move { b }),
        ),
        mesh.handle(
            SLEEP,
            handler(|_c: CallContext, ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }),
        ),
        mesh.handle(
            HOP,
            fallible_handler(|_c: CallContext, mut rest: Vec<String>| async move {
                if rest.is_empty() {
                    return Ok(1u32);
                }
                let next: std::net::SocketAddr =
                    rest.remove(0).parse().map_err(|e| format!("hop: {e}"))?;
                let n: u32 = Client::for_node(next)
                    .call_fallible::<_, u32, String>(HOP, &rest)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<u32, String>(n + 1)
            }),
        ),
        mesh.handle(
            WHOAMI,
            handler(move |_c: CallContext, (): ()| {
                let id = id.clone();
                async move { id }
            }),
        ),
    ];
    let mut guards = Vec::new();
    for s in served {
        match s {
            Ok(g) => guards.push(g),
            Err(e) => {
                eprintln!("mesh-node: {e}");
                std::process::exit(4);
            }
        }
    }
    println!("READY {}", mesh.id());
    let _ = std::io::stdout().flush();
    // Run until stdin closes (the test dropped its handle) or ends.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    mesh.stop().await;
    drop(guards);
    // Sends the spans not yet exported before saying so.
    drop(_traces);
    println!("STOPPED");
    let _ = std::io::stdout().flush();
}
