//! Rolling upgrade: a fleet of three inventory nodes moves from version 1 to version 2 of
//! its service one node at a time while a caller keeps calling, and the compatibility check
//! shows which change could roll out this way and which could not.
//!
//! 1. Three nodes serve version 1 (`v1.rs`); a caller calls `count` on them, round-robin,
//!    without pause.
//! 2. Each node in turn is drained (status `Offline`, so callers stop picking it), stopped,
//!    and replaced by a node serving version 2 (`v2.rs`: `count` unchanged, `reserve` new at
//!    the next id). The caller's calls never fail.
//! 3. Mid-upgrade, `reserve` reaches only the upgraded nodes: calls are balanced over the
//!    nodes that serve the method, and a version-1 node asked directly answers `NoHandler`.
//! 4. The breaking version (`v2_bad.rs`: `count` takes a number at the same id) is refused
//!    twice: by mesh-build, comparing it with the lock of version 1 (the check `build.rs`
//!    runs), and at run time, where a version-1 caller gets `Incompatible` from its
//!    signature fingerprint instead of a misread argument.
//!
//! Run: `cargo run --example rolling_upgrade`

mod v1;
mod v2;
mod v2_bad;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::prelude::*;
use mesh_core::{MeshError, NodeStatus};

async fn node(node_type: &str, discovery: &Discovery) -> Result<Mesh, MeshError> {
    Mesh::builder()
        .node_type(node_type)
        .discovery(discovery.clone())
        .prefix(format!("upgrade-{}", std::process::id()))
        .update_interval(Duration::from_millis(100))
        .start()
        .await
}

/// A node with the service it serves (dropping the guard stops serving).
struct Member {
    mesh: Mesh,
    version: &'static str,
    _serving: Box<dyn std::any::Any + Send>,
}

async fn settle(all: &[&Mesh]) -> Result<(), MeshError> {
    for m in all {
        m.wait_for_latest_view().await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let discovery = Discovery::local();
    let caller = node("web", &discovery).await?;
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let mesh = node("inventory", &discovery).await?;
        let serving = mesh.serve(v1::InventoryServer::new(v1::Store))?;
        fleet.push(Member {
            mesh,
            version: "v1",
            _serving: Box::new(serving),
        });
    }
    let mut all: Vec<&Mesh> = fleet.iter().map(|m| &m.mesh).collect();
    all.push(&caller);
    settle(&all).await?;
    println!("1. fleet: 3 nodes on v1; the caller calls Inventory::count without pause");

    // The caller's traffic, until the upgrade is over.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (caller, ok, failed, done) = (caller.clone(), ok.clone(), failed.clone(), done.clone());
        tokio::spawn(async move {
            let client = v1::InventoryClient::for_type("inventory").on(&caller);
            while !done.load(Ordering::Relaxed) {
                match client.count("apples".into()).await {
                    Ok(6) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(n) => {
                        eprintln!("count answered {n}, not 6");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    // The node drained between being chosen and the request arriving: the
                    // request did not run, so it is safe to send again (the next pick is a
                    // node that is still serving).
                    Err(mesh_core::CallError::ShuttingDown { .. }) => continue,
                    Err(e) => {
                        eprintln!("count failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };

    let started = std::time::Instant::now();
    for i in 0..fleet.len() {
        // Drain: callers see Offline and pick another node; then stop and replace.
        fleet[i].mesh.set_status(NodeStatus::Offline);
        let mut all: Vec<&Mesh> = fleet.iter().map(|m| &m.mesh).collect();
        all.push(&caller);
        settle(&all).await?;
        fleet[i].mesh.stop().await;
        let mesh = node("inventory", &discovery).await?;
        let serving = mesh.serve(v2::InventoryServer::new(v2::Store {
            name: format!("node-{i}"),
        }))?;
        fleet[i] = Member {
            mesh,
            version: "v2",
            _serving: Box::new(serving),
        };
        let mut all: Vec<&Mesh> = fleet.iter().map(|m| &m.mesh).collect();
        all.push(&caller);
        settle(&all).await?;
        let versions: Vec<&str> = fleet.iter().map(|m| m.version).collect();
        println!(
            "2. upgraded node {i}: fleet {versions:?}, {} calls answered so far, {} failed",
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );

        if i == 0 {
            // 3. The new method, mid-upgrade.
            let v2_client = v2::InventoryClient::for_type("inventory").on(&caller);
            for _ in 0..2 {
                let left = v2_client.reserve("pears".into(), 2).await?;
                println!("3. reserve (balanced): answered by an upgraded node, {left:?} left");
            }
            match v2::InventoryClient::for_node(fleet[1].mesh.addr())
                .on(&caller)
                .reserve("pears".into(), 2)
                .await
            {
                Err(e) => println!("3. reserve on a v1 node directly: {} ({e})", e.kind()),
                Ok(r) => return Err(format!("a v1 node answered reserve: {r:?}").into()),
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    traffic.await?;
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "2. upgrade done in {:.1?}: {ok} calls answered during it, {failed} failed",
        started.elapsed()
    );

    // 4a. The breaking version, as the build sees it: the lock of v1 against v2 and v2_bad.
    let lock_v1 = mesh_build::Lock::of(&mesh_build::manifest_from_source(
        "inventory",
        "v1.rs",
        include_str!("v1.rs"),
    )?);
    for (file, text) in [
        ("v2.rs", include_str!("v2.rs")),
        ("v2_bad.rs", include_str!("v2_bad.rs")),
    ] {
        let next =
            mesh_build::Lock::of(&mesh_build::manifest_from_source("inventory", file, text)?);
        for change in mesh_build::diff(&lock_v1, &next) {
            let verdict = if change.breaking {
                "refused"
            } else {
                "accepted"
            };
            println!("4. mesh-build, v1 -> {file}: {verdict}: {}", change.text);
        }
    }

    // 4b. And at run time: a v1 caller reaching a node that runs the breaking version.
    let bad = node("inventory-bad", &discovery).await?;
    let _bad_serving = bad.serve(v2_bad::InventoryServer::new(v2_bad::Store))?;
    settle(&[&bad, &caller]).await?;
    match v1::InventoryClient::for_node(bad.addr())
        .on(&caller)
        .count("apples".into())
        .await
    {
        Err(e) => println!("4. v1 caller -> breaking node: {} ({e})", e.kind()),
        Ok(n) => return Err(format!("the breaking node answered {n}").into()),
    }

    bad.stop().await;
    for m in &fleet {
        m.mesh.stop().await;
    }
    caller.stop().await;
    if failed > 0 {
        return Err(format!("{failed} calls failed during the rolling upgrade").into());
    }
    println!("done");
    Ok(())
}
