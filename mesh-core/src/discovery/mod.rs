//! Discovery and membership: how nodes find each other, and the view of who is there.
//!
//! A backend ([`DiscoveryBackend`]) registers the local node, keeps it alive and reports the
//! other nodes into the shared [`Membership`]; the mesh answers queries from that view. Three
//! backends come with the crate, chosen with [`Discovery`] in the mesh builder:
//!
//! * [`Discovery::local()`]: an in-process registry (tests, examples, single-process use);
//! * [`Discovery::redis`], [`Discovery::sentinel`], [`Discovery::cluster`]: Redis standalone,
//!   Sentinel or Cluster, with server-clock heartbeats, one reaper holding a lease, and change
//!   notification by pub/sub (see [`redis`] for the key layout);
//! * [`Discovery::seeds`]: a static list of seed addresses, with liveness by transport pings.

mod event;
mod local;
mod membership;
pub mod redis;
pub(crate) mod seeds;
mod view;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use event::{Health, LeaveReason, MeshEvent};
pub use local::LocalRegistry;
pub use membership::{Membership, MembershipSettings, SyncHook};
pub(crate) use seeds::SeedsBackend;
pub use seeds::SeedsConfig;

use crate::transport::Transport;

/// A boxed future, as backends return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What can go wrong in discovery.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The backend cannot be reached (at start: check its address and that it runs).
    #[error("discovery backend unreachable: {0}")]
    Unreachable(String),
    /// The backend configuration is invalid.
    #[error("invalid discovery configuration: `{field}` {problem}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The backend answered something unexpected.
    #[error("discovery backend protocol error: {0}")]
    Protocol(String),
    /// The node stopped before discovery was ready.
    #[error("the node is stopping")]
    Stopped,
}

/// The transport channel discovery messages travel on (channels 0 and 1 carry the rpc
/// layer's small and large messages).
pub const DISCOVERY_CHANNEL: u8 = 2;

/// What a backend gets to do its job.
#[non_exhaustive]
pub struct BackendContext {
    /// The shared membership state to register from and report into.
    pub membership: Membership,
    /// The node's transport (for backends that talk to peers directly).
    pub transport: Transport,
    /// Discovery messages other nodes sent to this one on the transport's
    /// [`DISCOVERY_CHANNEL`]; bounded.
    pub inbox: mpsc::Receiver<(SocketAddr, Bytes)>,
}

impl fmt::Debug for BackendContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendContext")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

/// A discovery backend: registers the local node, keeps it alive, and reports the others.
///
/// [`run`](Self::run) is spawned once when the node starts and runs until
/// [`Membership::stopping`] resolves. It must call [`Membership::ready`] once the node is
/// registered and has its first view (or with the error that stops the start), report
/// changes with [`Membership::upsert`], [`Membership::remove`] and
/// [`Membership::replace_all`], bracket each sync with [`Membership::begin_sync`] and
/// [`Membership::end_sync`], report its health with [`Membership::set_health`], and on stop
/// deregister before returning.
pub trait DiscoveryBackend: Send + 'static {
    /// A short name for logs ("redis", "local", ...).
    fn name(&self) -> &'static str;
    /// Runs the backend.
    fn run(self: Box<Self>, ctx: BackendContext) -> BoxFuture<'static, ()>;
}

/// Which discovery backend a node uses; see the module docs.
#[derive(Clone)]
#[non_exhaustive]
pub enum Discovery {
    /// The in-process registry (the process-wide one unless another is given).
    Local(LocalRegistry),
    /// Redis (standalone, Sentinel or Cluster).
    Redis(redis::RedisConfig),
    /// A static list of seed addresses.
    Seeds(SeedsConfig),
    /// Your own backend, built afresh for each start.
    Custom(Arc<dyn Fn() -> Box<dyn DiscoveryBackend> + Send + Sync>),
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discovery::Local(r) => f.debug_tuple("Local").field(r).finish(),
            Discovery::Redis(c) => f.debug_tuple("Redis").field(c).finish(),
            Discovery::Seeds(c) => f.debug_tuple("Seeds").field(c).finish(),
            Discovery::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery::local()
    }
}

impl Discovery {
    /// The process-wide in-process registry: every node of this process that uses it sees the
    /// others.
    pub fn local() -> Discovery {
        Discovery::Local(LocalRegistry::global())
    }

    /// A given in-process registry (isolated groups of nodes in one process, as in tests).
    pub fn local_registry(registry: &LocalRegistry) -> Discovery {
        Discovery::Local(registry.clone())
    }

    /// Redis standalone: `redis://[:password@]host:port[/db]`.
    pub fn redis(url: impl Into<String>) -> Discovery {
        Discovery::Redis(redis::RedisConfig::standalone(url))
    }

    /// Redis Sentinel: sentinel URLs and the master name.
    pub fn sentinel<I, S>(sentinels: I, master_name: impl Into<String>) -> Discovery
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Discovery::Redis(redis::RedisConfig::sentinel(sentinels, master_name))
    }

    /// Redis Cluster: a few of its nodes' URLs.
    pub fn cluster<I, S>(nodes: I) -> Discovery
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Discovery::Redis(redis::RedisConfig::cluster(nodes))
    }

    /// A static list of seed addresses (`"host:port"`): for small fixed fleets with no Redis.
    pub fn seeds<I, S>(seeds: I) -> Discovery
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Discovery::Seeds(SeedsConfig::new(seeds))
    }

    /// Your own backend.
    pub fn custom<F, B>(make: F) -> Discovery
    where
        F: Fn() -> B + Send + Sync + 'static,
        B: DiscoveryBackend,
    {
        Discovery::Custom(Arc::new(move || {
            Box::new(make()) as Box<dyn DiscoveryBackend>
        }))
    }

    /// Checks the configuration, naming the bad field.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        match self {
            Discovery::Redis(c) => c.validate(),
            Discovery::Seeds(c) => c.validate(),
            _ => Ok(()),
        }
    }

    /// Builds the backend.
    pub(crate) fn backend(&self) -> Box<dyn DiscoveryBackend> {
        match self {
            Discovery::Local(r) => Box::new(r.backend()),
            Discovery::Redis(c) => Box::new(redis::RedisBackend::new(c.clone())),
            Discovery::Seeds(c) => Box::new(SeedsBackend::new(c.clone())),
            Discovery::Custom(make) => make(),
        }
    }
}
