//! The [`Mesh`] handle: one started node, wiring the transport, discovery and messaging
//! together; built with [`Mesh::builder`].

mod builder;
mod keys;
mod messaging;
mod query;
mod tools;
pub mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use builder::MeshBuilder;
pub use messaging::{MeshStats, PeerStats};
pub use query::ValueError;
pub use watch::WatchEvent;

use crate::config::{ConfigError, MeshConfig};
use crate::discovery::{
    BackendContext, DISCOVERY_CHANNEL, Discovery, DiscoveryError, LeaveReason, Membership,
    MembershipSettings, MeshEvent,
};
use crate::node::{NodeId, NodeRecord};
use crate::rpc::{
    self, CallError, Incompatibility, RegisterError, Rpc, RpcSettings, Service, Unreachable,
};
use crate::transport::{PeerEvent, Transport, TransportConfig, TransportError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The configuration is invalid (the field is named).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The socket or transport could not be set up.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// Discovery failed to register the node or get its first view.
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// Another running mesh of this process was started with `default_for_process()`.
    #[error(
        "another running mesh is already this process's default (default_for_process): stop it first, or start this one without default_for_process() and pass it with .on(&mesh)"
    )]
    DefaultTaken,
    /// Registration and the first view took longer than `start_timeout`.
    #[error(
        "discovery did not become ready within {0:?} (start_timeout): is the backend reachable?"
    )]
    StartTimeout(Duration),
    /// Metrics could not be set up (the process has a recorder already, or the Prometheus
    /// address is taken).
    #[error("metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
}

struct Inner {
    config: MeshConfig,
    transport: Transport,
    membership: Membership,
    rpc: Arc<Rpc>,
    shared: Arc<crate::shared::Runtime>,
    shared_data: Arc<crate::shared_data::Runtime>,
    stop: CancellationToken,
    stopped: AtomicBool,
    backend: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The last handle went without `stop()`: deregister (bounded) and close, in the background.
impl Drop for Inner {
    fn drop(&mut self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.rpc.stop_accepting();
        self.stop.cancel();
        let backend = lock(&self.backend).take();
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        let transport = self.transport.clone();
        let cleanup = async move {
            if let Some(b) = backend {
                let _ = tokio::time::timeout(Duration::from_secs(1), b).await;
            }
            for t in tasks {
                t.abort();
            }
            transport.close();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(cleanup);
            }
            Err(_) => {
                for t in lock(&self.tasks).drain(..) {
                    t.abort();
                }
                self.transport.close();
            }
        }
    }
}

/// A started mesh node. Cheap to clone; the node stops on [`stop`](Mesh::stop) or when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("id", &self.id())
            .field("node_type", &self.inner.config.node_type)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`Mesh::serve`] returns: the service is served until this is dropped.
#[must_use = "the service stops being served when this guard is dropped"]
pub struct Serving {
    rpc: Weak<Rpc>,
    token: u64,
    name: &'static str,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("service", &self.name)
            .finish()
    }
}

impl Serving {
    /// Keeps serving until the node stops (forgets the guard).
    pub fn forever(self) {
        std::mem::forget(self);
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(rpc) = self.rpc.upgrade() {
            tracing::debug!(service = self.name, "service no longer served");
            rpc.unregister(self.token);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Mesh {
    /// A builder: configure, then `start().await`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), mesh_core::MeshError> {
    /// use mesh_core::{Discovery, Mesh};
    /// let mesh = Mesh::builder()
    ///     .node_type("game")
    ///     .discovery(Discovery::redis("redis://127.0.0.1:6379"))
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> MeshBuilder {
        MeshBuilder::new()
    }

    pub(crate) async fn start(
        config: MeshConfig,
        discovery: Discovery,
        default_for_process: bool,
    ) -> Result<Mesh, MeshError> {
        config.validate()?;
        // The recorder comes before any handler is registered: their histograms are
        // built against the recorder installed when they are.
        #[cfg(feature = "prometheus")]
        let prometheus = match config.metrics_listen {
            Some(addr) => Some(crate::metrics::install_prometheus(addr)?),
            None => None,
        };
        let metrics = config.metrics || config.metrics_listen.is_some();
        let seeds = matches!(discovery, Discovery::Seeds(_));
        if seeds && config.strict_membership == Some(true) {
            return Err(ConfigError::new(
                "strict_membership",
                "cannot be on with the seeds backend: a joining node is not a member until the seeds have heard it",
            )
            .into());
        }
        let strict = !seeds
            && config
                .strict_membership
                .unwrap_or(config.cluster_key.is_some());
        let transport = Transport::bind(TransportConfig {
            socket: config.socket(),
            protocol: config.protocol(),
        })
        .await?;
        let id = NodeId::new(transport.advertise_addr(), transport.incarnation());
        let span = tracing::info_span!("mesh", node = %id, node_type = %config.node_type);
        let mut record = NodeRecord::new(id, config.node_type.clone());
        record.role = config.role.clone();
        record.values = config.values.clone();
        record.started_at_ms = now_ms();
        let settings = MembershipSettings {
            update_interval: config.update_interval,
            expiry: config.effective_expiry(),
            prefix: config.prefix.clone(),
            guest: config.guest,
            backups: config.backups.clone(),
        };
        let stop = CancellationToken::new();
        let (membership, ready) = Membership::new(record, settings, stop.clone());
        let (inbox_tx, inbox_rx) = mpsc::channel(1024);
        let rpc = Rpc::new(
            transport.clone(),
            membership.clone(),
            RpcSettings {
                default_timeout: config.request_timeout,
                max_concurrent: config.max_concurrent_requests,
                max_message_size: config.max_message_size + rpc::ENVELOPE_HEADROOM,
                relay_limit: config.relay_limit,
                peer_timeout: config.peer_timeout,
                max_unreliable: config.protocol().max_unreliable_payload(),
                access: config.access.clone(),
                metrics,
            },
        );
        let (shared, shared_tasks) = match crate::shared::Runtime::start(
            rpc.clone(),
            config.shared.effective(config.max_message_size),
            stop.clone(),
        ) {
            Ok(started) => started,
            Err(e) => {
                // Only a stopped registry refuses: nothing else holds reserved ids.
                stop.cancel();
                transport.close();
                return Err(MeshError::Discovery(DiscoveryError::Stopped)).inspect_err(
                    |_| tracing::warn!(parent: &span, error = %e, "shared objects could not start"),
                );
            }
        };
        let shared_data = match crate::shared_data::Runtime::start(
            rpc.clone(),
            config.shared_data.effective(config.max_message_size),
            config.guest,
        ) {
            Ok(started) => started,
            Err(e) => {
                stop.cancel();
                transport.close();
                return Err(MeshError::Discovery(DiscoveryError::Stopped)).inspect_err(
                    |_| tracing::warn!(parent: &span, error = %e, "shared data could not start"),
                );
            }
        };
        if let Err(e) = rpc.register(
            rpc::TOOLS_SERVICE,
            rpc::reflect::methods(Arc::downgrade(&rpc), config.reflection),
            true,
        ) {
            // Only a stopped registry refuses: nothing else holds these reserved ids.
            stop.cancel();
            transport.close();
            return Err(MeshError::Discovery(DiscoveryError::Stopped)).inspect_err(
                |_| tracing::warn!(parent: &span, error = %e, "the tool commands could not start"),
            );
        }
        let mut tasks = vec![
            tokio::spawn(dispatch(rpc.clone(), inbox_tx, stop.clone()).instrument(span.clone())),
            tokio::spawn(bridge(rpc.clone(), stop.clone()).instrument(span.clone())),
            tokio::spawn(probe(rpc.clone(), stop.clone()).instrument(span.clone())),
            tokio::spawn(rpc::expire_calls(rpc.clone(), stop.clone()).instrument(span.clone())),
        ];
        tasks.extend(shared_tasks);
        #[cfg(feature = "prometheus")]
        if let Some(endpoint) = prometheus {
            tasks.push(tokio::spawn(endpoint.instrument(span.clone())));
        }
        if metrics {
            tasks.push(tokio::spawn(
                messaging::sample_metrics(rpc.clone(), shared.clone(), stop.clone())
                    .instrument(span.clone()),
            ));
        }
        if strict {
            // Nobody is a member before the first view.
            transport.restrict_to_members(Some(Vec::new()));
            tasks.push(tokio::spawn(
                restrict_to_members(transport.clone(), membership.clone(), stop.clone())
                    .instrument(span.clone()),
            ));
        }
        let backend = discovery.backend();
        tracing::info!(parent: &span, backend = backend.name(), addr = %id.addr, "starting");
        match &config.cluster_key {
            Some(k) => {
                tracing::info!(parent: &span, key = %k.id(), accepted = config.accept_keys.len(), "packets are authenticated and encrypted under the cluster key");
            }
            None => {
                tracing::warn!(parent: &span, "this node runs unauthenticated: no cluster key is configured, so anyone who can send it a datagram can call it as any member; set MESH_CLUSTER_KEY (or cluster_key) on every node");
            }
        }
        let ctx = BackendContext {
            membership: membership.clone(),
            transport: transport.clone(),
            inbox: inbox_rx,
        };
        let backend_task = tokio::spawn(backend.run(ctx).instrument(span.clone()));
        let mesh = Mesh {
            inner: Arc::new(Inner {
                config,
                transport: transport.clone(),
                membership,
                rpc,
                shared,
                shared_data,
                stop: stop.clone(),
                stopped: AtomicBool::new(false),
                backend: Mutex::new(Some(backend_task)),
                tasks: Mutex::new(tasks),
            }),
        };
        if let Err(e) = mesh.inner.rpc.register(
            rpc::TOOLS_SERVICE,
            vec![tools::stats_method(Arc::downgrade(&mesh.inner))],
            true,
        ) {
            tracing::warn!(parent: &span, error = %e, "the stats command could not start");
            mesh.shutdown(Duration::from_millis(100)).await;
            return Err(MeshError::Discovery(DiscoveryError::Stopped));
        }
        let bound = mesh.inner.config.start_timeout;
        let result = match tokio::time::timeout(bound, ready).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(MeshError::Discovery(e)),
            Ok(Err(_)) => Err(MeshError::Discovery(DiscoveryError::Stopped)),
            Err(_) => Err(MeshError::StartTimeout(bound)),
        };
        if let Err(e) = result {
            tracing::warn!(parent: &span, error = %e, "start failed");
            mesh.shutdown(Duration::from_millis(100)).await;
            return Err(e);
        }
        // A joining node holds the cluster's shared data before it is handed out.
        mesh.inner
            .shared_data
            .join(bound)
            .instrument(span.clone())
            .await;
        if rpc::register_process_mesh(mesh.rpc(), default_for_process).is_err() {
            mesh.shutdown(Duration::from_millis(100)).await;
            return Err(MeshError::DefaultTaken);
        }
        tracing::info!(parent: &span, nodes = mesh.inner.membership.view().len(), "ready");
        Ok(mesh)
    }

    /// Stops the node: status offline, deregistered at once (peers see it leave), running
    /// handlers drained for at most `shutdown_timeout`, then the socket closed. Idempotent.
    pub async fn stop(&self) {
        self.shutdown(self.inner.config.shutdown_timeout).await
    }

    async fn shutdown(&self, bound: Duration) {
        if self.inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let span = tracing::info_span!("stop", node = %self.id());
        async {
            tracing::info!("stopping");
            self.inner
                .membership
                .update_local(|r| r.status = crate::node::NodeStatus::Offline);
            self.inner.rpc.stop_accepting();
            self.inner.stop.cancel();
            let backend = lock(&self.inner.backend).take();
            if let Some(b) = backend
                && tokio::time::timeout(bound.max(Duration::from_millis(500)), b)
                    .await
                    .is_err()
            {
                tracing::warn!("discovery did not deregister in time");
            }
            self.inner.rpc.drain(bound).await;
            for t in lock(&self.inner.tasks).drain(..) {
                t.abort();
            }
            self.inner.transport.close();
            tracing::info!("stopped");
        }
        .instrument(span)
        .await
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Serves a service (as `#[mesh_service]` generates: `GreeterServer::new(impl)`) until the
    /// returned guard is dropped. Its command ids are listed in this node's record.
    ///
    /// Calls by address work at once; other nodes see the service in this node's record (what
    /// `for_type`, balanced calls and broadcasts by type select on) once this node's next sync
    /// has published it and theirs has read it: [`wait_for_latest_view`](Self::wait_for_latest_view)
    /// on this node, then on theirs, when that has to be now (with the in-process registry it
    /// is immediate).
    ///
    /// A handler runs on the task that received the request until its first `.await` (one
    /// that answers at once costs no task switch), then on a task of its own: keep CPU-heavy
    /// work in `tokio::task::spawn_blocking`.
    pub fn serve<S: Service>(&self, service: S) -> Result<Serving, RegisterError> {
        let name = service.name();
        let token =
            self.inner
                .rpc
                .register_with(name, service.methods(), service.schema(), false)?;
        tracing::info!(service = name, "serving");
        Ok(Serving {
            rpc: Arc::downgrade(&self.inner.rpc),
            token,
            name,
        })
    }

    /// Handles one command with a typed handler (see [`rpc::handler`],
    /// [`rpc::fallible_handler`]) until the guard is dropped.
    pub fn handle(
        &self,
        command: u16,
        handler: Arc<dyn rpc::Handler>,
    ) -> Result<Serving, RegisterError> {
        let token = self.inner.rpc.register(
            "",
            vec![rpc::Method {
                id: command,
                name: "",
                fingerprint: 0,
                handler,
            }],
            false,
        )?;
        Ok(Serving {
            rpc: Arc::downgrade(&self.inner.rpc),
            token,
            name: "handler",
        })
    }

    /// This node's shared objects: create, get, remove, list.
    pub fn shared(&self) -> crate::shared::Shared {
        crate::shared::Shared {
            rt: self.inner.shared.clone(),
        }
    }

    /// The cluster's shared data: a key-value map every node holds, each key ordered by
    /// one owner.
    pub fn shared_data(&self) -> crate::shared_data::SharedData {
        crate::shared_data::SharedData {
            rt: self.inner.shared_data.clone(),
        }
    }

    pub(crate) fn rpc(&self) -> &Arc<Rpc> {
        &self.inner.rpc
    }

    /// The configuration the node started with.
    pub fn config(&self) -> &MeshConfig {
        &self.inner.config
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.membership.local_id()
    }

    /// The address peers send to.
    pub fn addr(&self) -> SocketAddr {
        self.id().addr
    }
}

/// Takes messages from the transport and hands them to the messaging layer.
async fn dispatch(
    rpc: Arc<Rpc>,
    discovery: mpsc::Sender<(SocketAddr, bytes::Bytes)>,
    stop: CancellationToken,
) {
    // Discovery's channel goes to the discovery backend, everything else to messaging.
    let on = |m: crate::transport::Received| {
        if m.channel == Some(DISCOVERY_CHANNEL) {
            if discovery.try_send((m.from, m.data)).is_err() {
                rpc.counters
                    .dropped_discovery
                    .fetch_add(1, Ordering::Relaxed);
            }
        } else {
            rpc.on_message(m.from, m.incarnation, m.data);
        }
    };
    // Registered once: a fresh `cancelled()` per message costs a lock and a waiter list entry.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            r = rpc.transport.recv_with(on) => if r.is_err() {
                break;
            },
            _ = &mut stopped => {
                // Keep serving responses while draining: stop only when the transport closes.
                while rpc.transport.recv_with(on).await.is_ok() {}
                break;
            }
        }
    }
}

/// Feeds the transport's peer events into the view and fails calls to peers that are gone.
async fn bridge(rpc: Arc<Rpc>, stop: CancellationToken) {
    let mut peers = rpc.transport.events();
    let mut members = rpc.membership.events();
    loop {
        tokio::select! {
            e = peers.recv() => match e {
                Ok(PeerEvent::Up { peer, .. }) => rpc.membership.set_reachable(peer, true),
                Ok(PeerEvent::Unreachable { peer, reason }) => {
                    rpc.membership.set_reachable(peer, false);
                    rpc.fail_peer(peer, None, |p| CallError::Unreachable {
                        target: p.target.clone(),
                        command: p.command,
                        reason: Unreachable::Transport(reason),
                    });
                }
                Ok(PeerEvent::Restarted { peer, old, new }) => {
                    rpc.membership.set_reachable(peer, true);
                    rpc.cancel_requests_of(peer, old);
                    rpc.fail_peer(peer, Some(old), |p| CallError::Restarted {
                        target: p.target.clone(),
                        command: p.command,
                        old,
                        new,
                    });
                }
                Ok(PeerEvent::Incompatible { peer, reason }) => {
                    rpc.fail_peer(peer, None, |p| CallError::Incompatible {
                        target: p.target.clone(),
                        command: p.command,
                        reason: Incompatibility::Transport(reason),
                    });
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "peer events lagged: resynchronising with the transport");
                    rpc.resync_after_lag();
                }
                Err(RecvError::Closed) => break,
            },
            e = members.recv() => match e {
                // A graceful leaver drains its running requests and answers them; an expired
                // one is gone.
                Ok(MeshEvent::Left { node, reason: LeaveReason::Expired }) => {
                    let inc = node.id.incarnation;
                    rpc.fail_peer(node.id.addr, Some(inc), |p| CallError::Unreachable {
                        target: p.target.clone(),
                        command: p.command,
                        reason: Unreachable::Left,
                    });
                }
                Ok(MeshEvent::Restarted { old, new }) => {
                    rpc.fail_peer(old.id.addr, Some(old.id.incarnation), |p| CallError::Restarted {
                        target: p.target.clone(),
                        command: p.command,
                        old: old.id.incarnation,
                        new: new.id.incarnation,
                    });
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "membership events lagged"),
                Err(RecvError::Closed) => break,
            },
            _ = stop.cancelled() => break,
        }
    }
}

/// Strict membership: keeps the transport's list of members equal to the view's.
async fn restrict_to_members(
    transport: Transport,
    membership: Membership,
    stop: CancellationToken,
) {
    let mut events = membership.events();
    loop {
        let members: Vec<SocketAddr> = membership.view().iter().map(|r| r.id.addr).collect();
        transport.restrict_to_members(Some(members));
        tokio::select! {
            e = events.recv() => {
                if let Err(RecvError::Closed) = e {
                    break;
                }
            }
            _ = stop.cancelled() => break,
        }
    }
}

/// Keeps something in flight to peers we await responses from, so a dead peer is declared
/// unreachable within `peer_timeout` instead of the call waiting for its deadline.
async fn probe(rpc: Arc<Rpc>, stop: CancellationToken) {
    let period = (rpc.settings.peer_timeout / 4).max(Duration::from_millis(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Vec<SocketAddr> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let now = rpc.pending_peers();
        // Probe peers that have had calls pending for a whole period.
        for peer in now.iter().filter(|p| last.contains(p)) {
            let _ = rpc
                .transport
                .try_queue_detached(*peer, rpc::CH_SMALL, rpc::wire::ping());
        }
        last = now;
    }
}

#[cfg(test)]
impl Mesh {
    /// A started node with default settings on `registry`, for the crate's unit tests.
    #[allow(clippy::expect_used)]
    pub(crate) async fn test_node(registry: &crate::LocalRegistry) -> Mesh {
        Mesh::builder()
            .discovery(crate::Discovery::local_registry(registry))
            .start()
            .await
            .expect("a local node starts")
    }
}
