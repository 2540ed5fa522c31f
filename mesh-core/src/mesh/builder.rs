//! [`MeshBuilder`]: configuration that reads like documentation.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::{Mesh, MeshError};
use crate::config::{ConfigError, MeshConfig};
use crate::discovery::Discovery;

/// Builds and starts a [`Mesh`] node.
///
/// ```no_run
/// # async fn demo() -> Result<(), mesh_core::MeshError> {
/// use std::time::Duration;
/// use mesh_core::{Discovery, Mesh};
///
/// let mesh = Mesh::builder()
///     .node_type("game")
///     .role("UDP")
///     .port(8100)                                   // 8100 or the next free port
///     .discovery(Discovery::redis("redis://127.0.0.1:6379"))
///     .update_interval(Duration::from_millis(500))
///     .value("region", "eu-west")
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start().await`"]
pub struct MeshBuilder {
    config: MeshConfig,
    discovery: Option<Discovery>,
    bad_value: Option<ConfigError>,
    default_for_process: bool,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        MeshBuilder::new()
    }
}

impl MeshBuilder {
    /// Defaults: node type `"node"`, 127.0.0.1 on any free port, in-process discovery.
    pub fn new() -> MeshBuilder {
        MeshBuilder {
            config: MeshConfig::default(),
            discovery: None,
            bad_value: None,
            default_for_process: false,
        }
    }

    /// Starts from a loaded configuration (see [`MeshConfig`]).
    pub fn config(mut self, config: MeshConfig) -> MeshBuilder {
        self.config = config;
        self
    }

    /// The node's type.
    pub fn node_type(mut self, t: impl Into<String>) -> MeshBuilder {
        self.config.node_type = t.into();
        self
    }

    /// The node's role.
    pub fn role(mut self, r: impl Into<String>) -> MeshBuilder {
        self.config.role = r.into();
        self
    }

    /// The cluster name: nodes of other clusters refuse each other's packets.
    pub fn cluster(mut self, name: impl Into<String>) -> MeshBuilder {
        self.config.cluster = name.into();
        self
    }

    /// Binds this IP (any free port unless [`port`](Self::port) is set).
    pub fn address(mut self, ip: IpAddr) -> MeshBuilder {
        self.config.address = Some(ip);
        self
    }

    /// Binds this address exactly (port 0 = any).
    pub fn bind(mut self, addr: SocketAddr) -> MeshBuilder {
        self.config.address = Some(addr.ip());
        self.config.port = addr.port();
        self.config.port_range = if addr.port() == 0 { 100 } else { 1 };
        self
    }

    /// Binds the first address of this network interface.
    pub fn nic(mut self, name: impl Into<String>) -> MeshBuilder {
        self.config.nic = Some(name.into());
        self
    }

    /// First port to try; the next free one above is taken.
    pub fn port(mut self, port: u16) -> MeshBuilder {
        self.config.port = port;
        self
    }

    /// The IP peers should use, when it differs from the bound one.
    pub fn advertise(mut self, ip: IpAddr) -> MeshBuilder {
        self.config.advertise = Some(ip);
        self
    }

    /// The discovery backend (default: the in-process registry).
    pub fn discovery(mut self, d: Discovery) -> MeshBuilder {
        self.discovery = Some(d);
        self
    }

    /// Heartbeat and sync period (default 1 s).
    pub fn update_interval(mut self, d: Duration) -> MeshBuilder {
        self.config.update_interval = d;
        self
    }

    /// How long a silent node stays listed (default 2 update intervals).
    pub fn expiry(mut self, d: Duration) -> MeshBuilder {
        self.config.expiry = Some(d);
        self
    }

    /// Namespace in a shared backend (default `"mesh"`).
    pub fn prefix(mut self, p: impl Into<String>) -> MeshBuilder {
        self.config.prefix = p.into();
        self
    }

    /// An initial metadata value.
    pub fn value<T: Serialize>(mut self, name: impl Into<String>, v: T) -> MeshBuilder {
        let name = name.into();
        match serde_json::to_value(v) {
            Ok(v) => {
                self.config.values.insert(name, v);
            }
            Err(e) => {
                self.bad_value = Some(ConfigError::new(format!("values.{name}"), e.to_string()));
            }
        }
        self
    }

    /// Guest mode: sends and receives, but is not listed.
    pub fn guest(mut self, guest: bool) -> MeshBuilder {
        self.config.guest = guest;
        self
    }

    /// Backups per node type.
    pub fn backups(mut self, node_type: impl Into<String>, count: usize) -> MeshBuilder {
        self.config.backups.insert(node_type.into(), count);
        self
    }

    /// All backups settings at once.
    pub fn backups_map(mut self, map: HashMap<String, usize>) -> MeshBuilder {
        self.config.backups = map;
        self
    }

    /// Default call deadline (default 3 s).
    pub fn request_timeout(mut self, d: Duration) -> MeshBuilder {
        self.config.request_timeout = d;
        self
    }

    /// Requests run at once before answering "overloaded" (default 10,000).
    pub fn max_concurrent_requests(mut self, n: usize) -> MeshBuilder {
        self.config.max_concurrent_requests = n;
        self
    }

    /// Largest message (default 10 MiB).
    pub fn max_message_size(mut self, n: usize) -> MeshBuilder {
        self.config.max_message_size = n;
        self
    }

    /// A peer silent this long with something in flight is unreachable (default 1 s).
    pub fn peer_timeout(mut self, d: Duration) -> MeshBuilder {
        self.config.peer_timeout = d;
        self
    }

    /// Longest `stop()` waits for running handlers (default 5 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> MeshBuilder {
        self.config.shutdown_timeout = d;
        self
    }

    /// Longest `start()` waits for registration and the first view (default 10 s).
    pub fn start_timeout(mut self, d: Duration) -> MeshBuilder {
        self.config.start_timeout = d;
        self
    }

    /// Default fan-out of `send_many` (default 2).
    pub fn relay_limit(mut self, n: usize) -> MeshBuilder {
        self.config.relay_limit = n;
        self
    }

    /// Authenticates and encrypts every packet under `key`, shared by every node of the
    /// cluster (see [`ClusterKey`](crate::rudp::ClusterKey)): nodes without it can neither
    /// join, nor send, nor end a session. Keys can be rotated later on the running node
    /// ([`Mesh::install_key`](crate::Mesh::install_key)).
    pub fn cluster_key(mut self, key: crate::rudp::ClusterKey) -> MeshBuilder {
        self.config.cluster_key = Some(key);
        self
    }

    /// Turns strict membership on or off (default: on with a cluster key); see
    /// [`MeshConfig::strict_membership`].
    pub fn strict_membership(mut self, strict: bool) -> MeshBuilder {
        self.config.strict_membership = Some(strict);
        self
    }

    /// Allows callers as `rule` says (the access schema). Once any rule is given, requests
    /// and one-way messages that no rule allows are refused on this node: callers get
    /// `CallError::Forbidden`. For example
    /// `.allow(AccessRule::commands("lobby", 1000..=1099)).allow(AccessRule::service("admin", "Ops"))`.
    pub fn allow(mut self, rule: crate::rpc::AccessRule) -> MeshBuilder {
        self.config.access = std::mem::take(&mut self.config.access).allow(rule);
        self
    }

    /// Answers reflection and JSON calls (default on): what the `mesh` tool's `call` and
    /// `send` use. Off, both are refused with
    /// [`ToolRefusal::Disabled`](crate::rpc::ToolRefusal::Disabled); see
    /// [`MeshConfig::reflection`].
    pub fn reflection(mut self, on: bool) -> MeshBuilder {
        self.config.reflection = on;
        self
    }

    /// Records metrics into the process's `metrics` recorder (default off; see
    /// [`crate::metrics`] and [`MeshConfig::metrics`]).
    pub fn metrics(mut self, on: bool) -> MeshBuilder {
        self.config.metrics = on;
        self
    }

    /// Serves Prometheus' `/metrics` on `addr`, a loopback or private address (needs the
    /// `prometheus` feature; see [`MeshConfig::metrics_listen`]). Turns metrics on.
    pub fn prometheus(mut self, addr: SocketAddr) -> MeshBuilder {
        self.config.metrics_listen = Some(addr);
        self
    }

    /// Coalescing delay before sending (default 0).
    pub fn send_interval(mut self, d: Duration) -> MeshBuilder {
        self.config.send_interval = d;
        self
    }

    /// Makes this mesh the process default while it runs: the one clients built without
    /// `.on(&mesh)` (`GreeterClient::for_node(addr)`) go through. Needed only when a
    /// process runs several meshes (a single running mesh is the default by itself); a
    /// second running mesh asking for it is refused at start with
    /// [`MeshError::DefaultTaken`].
    pub fn default_for_process(mut self) -> MeshBuilder {
        self.default_for_process = true;
        self
    }

    /// The configuration as built so far.
    pub fn current_config(&self) -> &MeshConfig {
        &self.config
    }

    /// Starts the node: binds the socket, registers with discovery and returns once the
    /// node has its first view. A bad configuration is refused here, naming the field.
    pub async fn start(self) -> Result<Mesh, MeshError> {
        if let Some(e) = self.bad_value {
            return Err(MeshError::Config(e));
        }
        let discovery = self
            .discovery
            .unwrap_or_else(|| self.config.discovery.to_discovery());
        discovery.validate().map_err(|e| match e {
            crate::discovery::DiscoveryError::Config { field, problem } => {
                MeshError::Config(ConfigError::new(format!("discovery.{field}"), problem))
            }
            other => MeshError::Discovery(other),
        })?;
        Mesh::start(self.config, discovery, self.default_for_process).await
    }
}
