//! The live cluster page (feature `dashboard`): one HTML page served by a node, fed by
//! server-sent events.
//!
//! ```no_run
//! # async fn demo(mesh: mesh_core::Mesh) -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_core::dashboard::Dashboard;
//! let page = Dashboard::serve(mesh, "127.0.0.1:8080".parse()?).await?;
//! println!("open http://{}/", page.addr());
//! # Ok(()) }
//! ```
//!
//! Routes: `/` the page (no framework, nothing fetched from the network), `/events` the
//! stream: every membership event as [`WatchEvent`] JSON (`event: mesh`, what
//! `mesh watch --json` prints) and once a second a snapshot (`event: snapshot`): the
//! nodes of the view, discovery's health, and each node's stats, polled with
//! [`Mesh::node_stats_within`] (at most [`POLL_CONCURRENCY`] at once, each within
//! [`POLL_TIMEOUT`]). `/api/nodes/{id}`: one node's record and last stats.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde_json::{Value as Json, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::mesh::Mesh;
use crate::mesh::watch::{WatchEvent, health, record_json};

/// How many nodes' stats are read at once.
pub const POLL_CONCURRENCY: usize = 32;
/// The deadline of one node's stats read.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(700);
/// How often the page gets a snapshot and stats are read.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("page.html");

/// Why the page could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// The address is neither loopback nor private (use `serve_public` to insist).
    #[error(
        "refusing to serve the cluster page on {0}: not a loopback or private address (the page shows the whole cluster and has no login); listen on 127.0.0.1 or a private address, or allow it explicitly"
    )]
    NotPrivate(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The cluster page's server.
#[derive(Debug)]
#[non_exhaustive]
pub struct Dashboard;

/// A served page: it is served until this is dropped or [`stop`](Self::stop)ped.
#[derive(Debug)]
#[must_use = "the page stops being served when this handle is dropped"]
pub struct DashboardHandle {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl DashboardHandle {
    /// The address the page is served at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for DashboardHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Whether an address is loopback, private (RFC 1918, unique local) or link-local.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_loopback() || v.is_private() || v.is_link_local(),
        IpAddr::V6(v) => {
            v.is_loopback()
                || (v.segments()[0] & 0xfe00) == 0xfc00
                || (v.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

struct Shared {
    mesh: Mesh,
    /// The last stats read from each node, by node id, as JSON.
    stats: Mutex<BTreeMap<String, Json>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Dashboard {
    /// Serves the page for `mesh` at `listen` (a loopback or private address; port 0 picks
    /// one).
    pub async fn serve(mesh: Mesh, listen: SocketAddr) -> Result<DashboardHandle, DashboardError> {
        if !is_private(listen.ip()) {
            return Err(DashboardError::NotPrivate(listen));
        }
        Self::serve_public(mesh, listen).await
    }

    /// [`serve`](Self::serve) on any address, public ones included.
    pub async fn serve_public(
        mesh: Mesh,
        listen: SocketAddr,
    ) -> Result<DashboardHandle, DashboardError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| DashboardError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind {
                addr: listen,
                source,
            })?;
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            mesh,
            stats: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(poll_stats(shared.clone(), stop.clone()));
        let app = Router::new()
            .route("/", get(page))
            .route("/events", get(events))
            .route("/api/nodes/{id}", get(node))
            .with_state(shared);
        let s = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the cluster page stopped");
            }
        });
        tracing::info!(%addr, "serving the cluster page");
        Ok(DashboardHandle { addr, stop })
    }
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

/// Reads every node's stats once a second, bounded in concurrency and time.
async fn poll_stats(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SNAPSHOT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let mesh = shared.mesh.clone();
        let nodes = mesh.nodes();
        let read: Vec<(String, Json)> = futures::stream::iter(nodes)
            .map(|r| {
                let mesh = mesh.clone();
                async move {
                    let v = match mesh.node_stats_within(r.id, Some(POLL_TIMEOUT)).await {
                        Ok(s) => serde_json::to_value(&s).unwrap_or(Json::Null),
                        Err(e) => json!({ "error": e.to_string() }),
                    };
                    (r.id.to_string(), v)
                }
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect()
            .await;
        let mut map = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
        map.extend(read);
    }
}

/// The page's snapshot: nodes, health, stats, time.
fn snapshot(shared: &Shared) -> Json {
    let now = now_ms();
    let (word, reason) = health(&shared.mesh.health());
    let nodes: Vec<Json> = shared
        .mesh
        .nodes()
        .iter()
        .map(|r| record_json(r, now))
        .collect();
    let stats = shared
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    json!({
        "at_ms": now,
        "self": shared.mesh.id().to_string(),
        "health": { "health": word, "reason": reason },
        "nodes": nodes,
        "stats": stats,
    })
}

async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let rx = shared.mesh.events();
    let mut tick = tokio::time::interval(SNAPSHOT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(
        (shared, rx, tick),
        |(shared, mut rx, mut tick)| async move {
            let ev = tokio::select! {
                e = rx.recv() => match e {
                    Ok(e) => Event::default().event("mesh").data(WatchEvent::from_event(&e, now_ms()).json.to_string()),
                    Err(RecvError::Lagged(_)) => Event::default().event("snapshot").data(snapshot(&shared).to_string()),
                    Err(RecvError::Closed) => return None,
                },
                _ = tick.tick() => Event::default().event("snapshot").data(snapshot(&shared).to_string()),
            };
            Some((Ok(ev), (shared, rx, tick)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn node(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let now = now_ms();
    let Some(r) = shared
        .mesh
        .nodes()
        .into_iter()
        .find(|r| r.id.to_string() == id)
    else {
        return (StatusCode::NOT_FOUND, "no such node in the view").into_response();
    };
    let stats = shared
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned()
        .unwrap_or(Json::Null);
    axum::Json(json!({ "node": record_json(&r, now), "stats": stats })).into_response()
}
