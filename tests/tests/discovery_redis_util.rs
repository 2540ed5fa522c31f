//! Helpers shared by the `discovery_redis*` test files (included with `#[path]`; built on
//! its own as well, as an empty test binary).
#![allow(dead_code)]

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_core::discovery::redis::RedisConfig;
use mesh_core::{Discovery, Mesh, MeshEvent, NodeId};
use tokio::sync::broadcast;

pub(crate) type TestResult = Result<(), Box<dyn Error>>;

/// The heartbeat interval of the tests.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);
/// The expiry of the tests (3 intervals).
pub(crate) const EXPIRY: Duration = Duration::from_millis(300);
/// The longest any wait of the tests takes.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A builder with the tests' timing and the given discovery.
pub(crate) fn builder(
    discovery: Discovery,
    prefix: &str,
    node_type: &str,
) -> mesh_core::MeshBuilder {
    Mesh::builder()
        .node_type(node_type)
        .discovery(discovery)
        .prefix(prefix)
        .update_interval(INTERVAL)
        .expiry(EXPIRY)
        .start_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_millis(500))
}

/// Starts a node on standalone Redis.
pub(crate) async fn node(url: &str, prefix: &str, node_type: &str) -> Result<Mesh, Box<dyn Error>> {
    Ok(builder(Discovery::redis(url), prefix, node_type)
        .start()
        .await?)
}

/// Starts a node with a Redis configuration.
pub(crate) async fn node_with(
    config: RedisConfig,
    prefix: &str,
    node_type: &str,
) -> Result<Mesh, Box<dyn Error>> {
    Ok(builder(Discovery::Redis(config), prefix, node_type)
        .start()
        .await?)
}

/// Polls `check` every 10 ms until it holds, for at most `timeout`.
pub(crate) async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if check() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every node's view holds exactly `ids` (besides nothing else).
pub(crate) async fn wait_views(
    nodes: &[&Mesh],
    ids: &[NodeId],
    timeout: Duration,
) -> Result<Duration, String> {
    let mut want: Vec<NodeId> = ids.to_vec();
    want.sort();
    wait_for(
        &format!("every view to hold {} nodes", want.len()),
        timeout,
        || {
            nodes.iter().all(|m| {
                let mut have: Vec<NodeId> = m.nodes().iter().map(|r| r.id).collect();
                have.sort();
                have == want
            })
        },
    )
    .await
}

/// Waits for an event matching `pred`, for at most `timeout`.
pub(crate) async fn wait_event(
    rx: &mut broadcast::Receiver<MeshEvent>,
    timeout: Duration,
    mut pred: impl FnMut(&MeshEvent) -> bool,
) -> Result<MeshEvent, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return Err(format!("no matching event within {timeout:?}")),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(e)) if pred(&e) => return Ok(e),
            Ok(Ok(_)) => {}
        }
    }
}

/// A `mesh-node` process (see `tests/src/bin/mesh-node.rs`); SIGKILLed on drop.
pub(crate) struct NodeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its node id.
    pub(crate) id: NodeId,
}

impl NodeProcess {
    /// Starts one with `MESH_*` variables `env` (plus the tests' interval and expiry) and waits
    /// for its `READY` line.
    pub(crate) fn spawn(env: &[(&str, &str)]) -> Result<NodeProcess, Box<dyn Error>> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-node"));
        cmd.env(
            "MESH_UPDATE_INTERVAL",
            format!("{}ms", INTERVAL.as_millis()),
        )
        .env("MESH_EXPIRY", format!("{}ms", EXPIRY.as_millis()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Read the READY line on a thread so a stuck child cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("mesh-node did not print READY: {other:?}").into());
            }
        };
        let id = line
            .strip_prefix("READY ")
            .ok_or_else(|| format!("unexpected line {line:?}"))?
            .trim()
            .parse()?;
        Ok(NodeProcess { child, stdin, id })
    }

    /// SIGKILLs it (no deregistration).
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes its stdin: it stops gracefully.
    pub(crate) fn stop(&mut self) {
        self.stdin = None;
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A plain synchronous connection for poking at Redis.
pub(crate) fn plain(url: &str) -> Result<redis::Connection, Box<dyn Error>> {
    let c = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(c)
}
