//! [`MeshConfig`]: everything a node is configured with, loadable from TOML or JSON, with
//! `MESH_*` environment overrides, validated at start with the offending field named.
//!
//! ```
//! use mesh_core::config::MeshConfig;
//!
//! let cfg = MeshConfig::from_toml_str(r#"
//!     node_type = "game"
//!     port = 8100
//!     update_interval = "500ms"
//!     [discovery]
//!     backend = "redis"
//!     url = "redis://127.0.0.1:6379/0"
//!     [values]
//!     region = "eu-west"
//! "#).unwrap();
//! assert_eq!(cfg.update_interval, std::time::Duration::from_millis(500));
//! cfg.validate().unwrap();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::discovery::{Discovery, LocalRegistry, SeedsConfig, redis::RedisConfig};
use crate::node::Value;

/// A configuration that cannot work, naming the field and what would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mesh configuration: `{field}` {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The offending field (or environment variable).
    pub field: String,
    /// What is wrong and what would work.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The discovery backend as written in a configuration file (`[discovery]`, keyed by
/// `backend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum DiscoverySpec {
    /// The process-wide in-process registry.
    #[default]
    Local,
    /// Redis standalone.
    Redis {
        /// `redis://[:password@]host:port[/db]`
        url: String,
    },
    /// Redis Sentinel.
    Sentinel {
        /// Sentinel URLs.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master_name: String,
        /// Password of the Redis master (not of the sentinels).
        #[serde(default)]
        password: Option<String>,
        /// Database number.
        #[serde(default)]
        db: i64,
    },
    /// Redis Cluster.
    Cluster {
        /// A few cluster nodes' URLs.
        nodes: Vec<String>,
    },
    /// Static seeds.
    Seeds {
        /// `host:port` of the seed nodes.
        seeds: Vec<String>,
    },
}

impl DiscoverySpec {
    /// The runtime form.
    pub fn to_discovery(&self) -> Discovery {
        match self {
            DiscoverySpec::Local => Discovery::Local(LocalRegistry::global()),
            DiscoverySpec::Redis { url } => Discovery::redis(url.clone()),
            DiscoverySpec::Sentinel {
                sentinels,
                master_name,
                password,
                db,
            } => {
                let mut c = RedisConfig::sentinel(sentinels.clone(), master_name.clone());
                c.password = password.clone();
                c.db = *db;
                Discovery::Redis(c)
            }
            DiscoverySpec::Cluster { nodes } => Discovery::cluster(nodes.clone()),
            DiscoverySpec::Seeds { seeds } => Discovery::Seeds(SeedsConfig::new(seeds.clone())),
        }
    }
}

/// Everything a node is configured with. Every field has a default; see the field docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MeshConfig {
    /// The node's type (`MESH_NODE_TYPE`), default `"node"`.
    pub node_type: String,
    /// The node's role (`MESH_ROLE`), free text.
    pub role: String,
    /// Cluster name (`MESH_CLUSTER`): nodes of other clusters refuse each other's packets.
    pub cluster: String,
    /// IP to bind (`MESH_ADDRESS`); default 127.0.0.1 unless `nic` is set.
    pub address: Option<IpAddr>,
    /// Interface whose address is bound (`MESH_NIC`).
    pub nic: Option<String>,
    /// First UDP port to try (`MESH_PORT`); the next free one above is taken. 0 = any.
    pub port: u16,
    /// How many ports upward from `port` to try.
    pub port_range: u16,
    /// IP advertised to peers (`MESH_ADVERTISE`), when it differs from the bound one.
    pub advertise: Option<IpAddr>,
    /// The discovery backend (`MESH_DISCOVERY`, `MESH_REDIS_URL`, `MESH_SEEDS`, ...).
    pub discovery: DiscoverySpec,
    /// Heartbeat and sync period (`MESH_UPDATE_INTERVAL`), default 1 s.
    #[serde(with = "duration")]
    pub update_interval: Duration,
    /// How long a silent node stays listed (`MESH_EXPIRY`); default 2 update intervals, at
    /// least 1.5.
    #[serde(with = "opt_duration")]
    pub expiry: Option<Duration>,
    /// Namespace in a shared backend (`MESH_PREFIX`), default `"mesh"`: clusters with
    /// different prefixes share a Redis without seeing each other.
    pub prefix: String,
    /// Initial metadata values.
    pub values: BTreeMap<String, Value>,
    /// Guest mode (`MESH_GUEST`): sends and receives, but is not listed.
    pub guest: bool,
    /// Backups per node type (`{ game = 2 }`).
    pub backups: HashMap<String, usize>,
    /// Default call deadline (`MESH_REQUEST_TIMEOUT`), default 3 s.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Requests a node runs at once before answering "overloaded", default 10,000.
    pub max_concurrent_requests: usize,
    /// Longest `stop()` waits for running handlers, default 5 s.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Longest `start()` waits for registration and the first view, default 10 s.
    #[serde(with = "duration")]
    pub start_timeout: Duration,
    /// Largest message (default 10 MiB); larger ones are refused on both ends.
    pub max_message_size: usize,
    /// A peer silent this long while something is in flight is unreachable (default 1 s).
    #[serde(with = "duration")]
    pub peer_timeout: Duration,
    /// Optional coalescing delay before sending (default 0).
    #[serde(with = "duration")]
    pub send_interval: Duration,
    /// Default relay fan-out of `send_many` (each hop forwards to at most this many nodes).
    pub relay_limit: usize,
    /// Limits on shared objects (the `[shared]` table).
    pub shared: crate::shared::SharedLimits,
    /// Limits on the cluster's shared data (the `[shared_data]` table).
    pub shared_data: crate::shared_data::SharedDataLimits,
    /// Which node types may call which services or command ranges here (the `access`
    /// array: `access = [{ caller = "lobby", commands = [1000, 1099] }, { caller = "admin",
    /// service = "Ops" }]`); empty allows everything.
    pub access: crate::rpc::AccessSchema,
    /// The cluster key (`MESH_CLUSTER_KEY`, 64 hex digits; see [`ClusterKey`]). With it every
    /// packet is authenticated and encrypted, and nodes without it can neither join, nor
    /// send, nor end a session. Without it the node runs unauthenticated (and says so once
    /// at start).
    ///
    /// [`ClusterKey`]: crate::rudp::ClusterKey
    pub cluster_key: Option<crate::rudp::ClusterKey>,
    /// More keys accepted from peers during a rotation (`MESH_ACCEPT_KEYS`, comma-separated;
    /// at most 3): install the new key here on every node, then make it `cluster_key`
    /// everywhere, then drop the old one. See [`Keyring`](crate::rudp::Keyring).
    pub accept_keys: Vec<crate::rudp::ClusterKey>,
    /// Strict membership (`MESH_STRICT_MEMBERSHIP`): datagrams from addresses outside the
    /// membership view are dropped before they are read (as are those of nodes that left),
    /// except from peers this node opened a session to. Default: on with a cluster key, off
    /// without; refused with the seeds backend, where a joining node is not a member yet.
    /// Turn it off for guests (they are not listed) and for nodes that advertise an address
    /// other than the one they send from.
    pub strict_membership: Option<bool>,
    /// Server reflection and JSON calls (`MESH_REFLECTION`), default on: the node answers
    /// the reserved commands that list its services, methods, command ids, fingerprints and
    /// types, and that run a method from JSON arguments (what the `mesh` tool's `call` and
    /// `send` use; see [`rpc::CMD_REFLECT`](crate::rpc::CMD_REFLECT)). Both obey the access
    /// schema; off, both are refused.
    pub reflection: bool,
    /// Metrics through the `metrics` facade (`MESH_METRICS`), default off: the node
    /// records handler time per command into the recorder installed when it starts, and
    /// once a second sets its counters and gauges (per-peer RTT, losses, bytes, drops by
    /// reason, calls, in-flight requests, discovery, shared objects); see
    /// [`crate::metrics`]. On by itself when [`metrics_listen`](Self::metrics_listen) is
    /// set.
    pub metrics: bool,
    /// Where to serve Prometheus' `/metrics` (`MESH_METRICS_LISTEN`, `host:port`), needs the
    /// `prometheus` feature: a loopback or private address (10/8, 172.16/12, 192.168/16,
    /// fc00::/7); any other is refused at start. Default none.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            node_type: "node".to_string(),
            role: String::new(),
            cluster: "default".to_string(),
            address: None,
            nic: None,
            port: 0,
            port_range: 100,
            advertise: None,
            discovery: DiscoverySpec::Local,
            update_interval: Duration::from_secs(1),
            expiry: None,
            prefix: "mesh".to_string(),
            values: BTreeMap::new(),
            guest: false,
            backups: HashMap::new(),
            request_timeout: Duration::from_secs(3),
            max_concurrent_requests: 10_000,
            shutdown_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
            max_message_size: 10 * 1024 * 1024,
            peer_timeout: Duration::from_secs(1),
            send_interval: Duration::ZERO,
            relay_limit: 2,
            access: crate::rpc::AccessSchema::default(),
            cluster_key: None,
            accept_keys: Vec::new(),
            strict_membership: None,
            reflection: true,
            metrics: false,
            metrics_listen: None,
            shared: crate::shared::SharedLimits::default(),
            shared_data: crate::shared_data::SharedDataLimits::default(),
        }
    }
}

/// The environment variables [`MeshConfig::apply_env`] reads.
pub const ENV_VARS: &[&str] = &[
    "MESH_NODE_TYPE",
    "MESH_ROLE",
    "MESH_CLUSTER",
    "MESH_ADDRESS",
    "MESH_NIC",
    "MESH_PORT",
    "MESH_ADVERTISE",
    "MESH_DISCOVERY",
    "MESH_REDIS_URL",
    "MESH_SENTINELS",
    "MESH_SENTINEL_MASTER",
    "MESH_CLUSTER_NODES",
    "MESH_SEEDS",
    "MESH_UPDATE_INTERVAL",
    "MESH_EXPIRY",
    "MESH_PREFIX",
    "MESH_GUEST",
    "MESH_REQUEST_TIMEOUT",
    "MESH_CLUSTER_KEY",
    "MESH_ACCEPT_KEYS",
    "MESH_STRICT_MEMBERSHIP",
    "MESH_REFLECTION",
    "MESH_METRICS",
    "MESH_METRICS_LISTEN",
];

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A refusal of the value at `path` (serde_path_to_error's dotted path; `.` is the root).
fn field_error(path: &str, message: &str) -> ConfigError {
    // An unknown key is refused while its name is read, before it is on the path: name it
    // by the key serde reports, under the path of the table that holds it.
    let unknown = unknown_key(message);
    let field = match (path, unknown) {
        ("." | "", Some(k)) => k.to_string(),
        ("." | "", None) => "<root>".to_string(),
        (p, Some(k)) if !p.ends_with(k) => format!("{p}.{k}"),
        (p, _) => p.to_string(),
    };
    ConfigError::new(field, message.trim().to_string())
}

/// The key of serde's "unknown field `x`, expected ..." refusal.
fn unknown_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn syntax_error(format: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map_or(1, |r| {
        text[..r.start.min(text.len())].matches('\n').count() + 1
    });
    ConfigError::new(
        format!("<{} line {line}>", format.to_lowercase()),
        format!("not valid {format}: {}", e.message()),
    )
}

impl MeshConfig {
    /// Parses TOML. A refusal names the field's dotted path (`discovery.url`,
    /// `update_interval`, an unknown key), or the line of a syntax error.
    pub fn from_toml_str(s: &str) -> Result<MeshConfig, ConfigError> {
        let de = toml::Deserializer::parse(s).map_err(|e| syntax_error("TOML", s, &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            field_error(&path, inner.message())
        })
    }

    /// Parses JSON. A refusal names the field's dotted path, or the line of a syntax error.
    pub fn from_json_str(s: &str) -> Result<MeshConfig, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(s);
        let r: MeshConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                ConfigError::new(
                    format!("<json line {}>", inner.line()),
                    format!("not valid JSON: {inner}"),
                )
            } else {
                field_error(&path, &inner.to_string())
            }
        })?;
        de.end().map_err(|e| {
            ConfigError::new(
                format!("<json line {}>", e.line()),
                format!("trailing characters after the configuration: {e}"),
            )
        })?;
        Ok(r)
    }

    /// Reads a `.toml` or `.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<MeshConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        }
    }

    /// Applies `MESH_*` overrides from the process environment (see [`ENV_VARS`]).
    pub fn with_env(self) -> Result<MeshConfig, ConfigError> {
        self.apply_env(std::env::vars())
    }

    /// Applies `MESH_*` overrides from `vars`; a bad value is an error naming the variable.
    pub fn apply_env<I, K, V>(mut self, vars: I) -> Result<MeshConfig, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.as_ref().starts_with("MESH_"))
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let get = |k: &str| vars.get(k).map(String::as_str);
        fn parse<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse::<T>()
                .map_err(|e| ConfigError::new(k, format!("= {v:?}: {e}")))
        }
        let dur = |k: &str, v: &str| {
            duration::parse(v).map_err(|e| ConfigError::new(k, format!("= {v:?}: {e}")))
        };
        if let Some(v) = get("MESH_NODE_TYPE") {
            self.node_type = v.to_string();
        }
        if let Some(v) = get("MESH_ROLE") {
            self.role = v.to_string();
        }
        if let Some(v) = get("MESH_CLUSTER") {
            self.cluster = v.to_string();
        }
        if let Some(v) = get("MESH_ADDRESS") {
            self.address = Some(parse("MESH_ADDRESS", v)?);
        }
        if let Some(v) = get("MESH_NIC") {
            self.nic = Some(v.to_string());
        }
        if let Some(v) = get("MESH_PORT") {
            self.port = parse("MESH_PORT", v)?;
        }
        if let Some(v) = get("MESH_ADVERTISE") {
            self.advertise = Some(parse("MESH_ADVERTISE", v)?);
        }
        if let Some(v) = get("MESH_UPDATE_INTERVAL") {
            self.update_interval = dur("MESH_UPDATE_INTERVAL", v)?;
        }
        if let Some(v) = get("MESH_EXPIRY") {
            self.expiry = Some(dur("MESH_EXPIRY", v)?);
        }
        if let Some(v) = get("MESH_PREFIX") {
            self.prefix = v.to_string();
        }
        let flag = |k: &str, v: &str| match v {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" | "" => Ok(false),
            _ => Err(ConfigError::new(k, format!("= {v:?}: use true or false"))),
        };
        if let Some(v) = get("MESH_GUEST") {
            self.guest = flag("MESH_GUEST", v)?;
        }
        if let Some(v) = get("MESH_REFLECTION") {
            self.reflection = flag("MESH_REFLECTION", v)?;
        }
        if let Some(v) = get("MESH_METRICS") {
            self.metrics = flag("MESH_METRICS", v)?;
        }
        if let Some(v) = get("MESH_METRICS_LISTEN") {
            self.metrics_listen = Some(v.parse().map_err(|_| {
                ConfigError::new(
                    "MESH_METRICS_LISTEN",
                    format!("= {v:?}: expected host:port"),
                )
            })?);
        }
        // A key is a secret: a refusal names the variable and the problem, never the value.
        let key = |k: &str, v: &str| {
            v.parse::<crate::rudp::ClusterKey>()
                .map_err(|e| ConfigError::new(k, e.to_string()))
        };
        if let Some(v) = get("MESH_CLUSTER_KEY") {
            self.cluster_key = Some(key("MESH_CLUSTER_KEY", v)?);
        }
        if let Some(v) = get("MESH_ACCEPT_KEYS") {
            self.accept_keys = v
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .map(|k| key("MESH_ACCEPT_KEYS", k))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("MESH_STRICT_MEMBERSHIP") {
            self.strict_membership = Some(parse("MESH_STRICT_MEMBERSHIP", v)?);
        }
        if let Some(v) = get("MESH_REQUEST_TIMEOUT") {
            self.request_timeout = dur("MESH_REQUEST_TIMEOUT", v)?;
        }
        if let Some(v) = get("MESH_REDIS_URL") {
            self.discovery = DiscoverySpec::Redis { url: v.to_string() };
        }
        if let Some(v) = get("MESH_SENTINELS") {
            let master_name = get("MESH_SENTINEL_MASTER")
                .unwrap_or("mymaster")
                .to_string();
            self.discovery = DiscoverySpec::Sentinel {
                sentinels: list(v),
                master_name,
                password: None,
                db: 0,
            };
        }
        if let Some(v) = get("MESH_CLUSTER_NODES") {
            self.discovery = DiscoverySpec::Cluster { nodes: list(v) };
        }
        if let Some(v) = get("MESH_SEEDS") {
            self.discovery = DiscoverySpec::Seeds { seeds: list(v) };
        }
        if let Some(v) = get("MESH_DISCOVERY") {
            match (v, &self.discovery) {
                ("local", _) => self.discovery = DiscoverySpec::Local,
                ("redis", DiscoverySpec::Redis { .. })
                | ("sentinel", DiscoverySpec::Sentinel { .. })
                | ("cluster", DiscoverySpec::Cluster { .. })
                | ("seeds", DiscoverySpec::Seeds { .. }) => {}
                _ => {
                    return Err(ConfigError::new(
                        "MESH_DISCOVERY",
                        format!(
                            "= {v:?}: use local, or set MESH_REDIS_URL, MESH_SENTINELS, MESH_CLUSTER_NODES or MESH_SEEDS for the others"
                        ),
                    ));
                }
            }
        }
        Ok(self)
    }

    /// The expiry in effect.
    pub fn effective_expiry(&self) -> Duration {
        self.expiry.unwrap_or(self.update_interval * 2)
    }

    /// Checks that the values can work, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |f: &str, p: &str| Err(ConfigError::new(f, p));
        if self.node_type.is_empty() || self.node_type.len() > 64 {
            return bad("node_type", "must be 1 to 64 characters");
        }
        if self.role.len() > 64 {
            return bad("role", "must be at most 64 characters");
        }
        if self.cluster.is_empty() {
            return bad("cluster", "must not be empty");
        }
        if self.address.is_some() && self.nic.is_some() {
            return bad("address", "set either `address` or `nic`, not both");
        }
        if self.update_interval < Duration::from_millis(10) {
            return bad("update_interval", "must be at least 10ms");
        }
        let expiry = self.effective_expiry();
        if expiry.as_secs_f64() < 1.5 * self.update_interval.as_secs_f64() {
            return bad(
                "expiry",
                "must be at least 1.5 update intervals (a node would expire between two heartbeats)",
            );
        }
        if self.prefix.is_empty() || self.prefix.len() > 64 || self.prefix.contains(['{', '}', ' '])
        {
            return bad(
                "prefix",
                "must be 1 to 64 characters without braces or spaces",
            );
        }
        if self.request_timeout.is_zero() || self.request_timeout > Duration::from_secs(86_400) {
            return bad("request_timeout", "must be between 1ms and one day");
        }
        if self.max_concurrent_requests == 0 {
            return bad("max_concurrent_requests", "must be at least 1");
        }
        if self.max_message_size == 0 || self.max_message_size > (1 << 30) {
            return bad("max_message_size", "must be between 1 byte and 1 GiB");
        }
        if let Some(p) = self.access.problem() {
            return bad("access", &p);
        }
        if self.relay_limit == 0 {
            return bad("relay_limit", "must be at least 1");
        }
        if self.start_timeout.is_zero() {
            return bad("start_timeout", "must be above zero");
        }
        if let Some(a) = self.metrics_listen {
            if !cfg!(feature = "prometheus") {
                return bad(
                    "metrics_listen",
                    "needs mesh-core's `prometheus` feature (features = [\"prometheus\"])",
                );
            }
            if !crate::metrics::is_private(a.ip()) {
                return bad(
                    "metrics_listen",
                    "must be a loopback or private address (10/8, 172.16/12, 192.168/16, fc00::/7): metrics tell the cluster's layout",
                );
            }
        }
        for (k, v) in &self.values {
            if k.is_empty() || k.len() > 128 {
                return Err(ConfigError::new(
                    format!("values.{k}"),
                    "names must be 1 to 128 characters",
                ));
            }
            let _ = v;
        }
        self.discovery
            .to_discovery()
            .validate()
            .map_err(|e| match e {
                crate::discovery::DiscoveryError::Config { field, problem } => {
                    ConfigError::new(format!("discovery.{field}"), problem)
                }
                other => ConfigError::new("discovery", other.to_string()),
            })?;
        if !self.accept_keys.is_empty() && self.cluster_key.is_none() {
            return bad(
                "accept_keys",
                "needs a cluster_key: the accepted keys are for a rotation of it",
            );
        }
        if self.accept_keys.len() >= crate::rudp::MAX_KEYS {
            return bad(
                "accept_keys",
                "at most 3 keys (with cluster_key, a keyring holds 4)",
            );
        }
        self.protocol()
            .validate()
            .map_err(|e| ConfigError::new(e.field, e.problem))?;
        let sh = &self.shared;
        for (field, v) in [
            ("shared.max_objects", sh.max_objects),
            ("shared.max_object_bytes", sh.max_object_bytes),
            ("shared.max_map_len", sh.max_map_len as usize),
            ("shared.max_subscribers", sh.max_subscribers),
            ("shared.max_fields", sh.max_fields),
            ("shared_data.max_key_len", self.shared_data.max_key_len),
            (
                "shared_data.max_value_bytes",
                self.shared_data.max_value_bytes,
            ),
            ("shared_data.max_keys", self.shared_data.max_keys),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1");
            }
        }
        Ok(())
    }

    /// The keyring `cluster_key` and `accept_keys` make.
    fn keyring(&self) -> Option<crate::rudp::Keyring> {
        let mut ring = crate::rudp::Keyring::new(self.cluster_key.clone()?);
        for k in &self.accept_keys {
            // Bounded by `validate`; a full ring keeps the first keys.
            let _ = ring.install(k.clone());
        }
        Some(ring)
    }

    /// The transport protocol configuration these settings give.
    pub(crate) fn protocol(&self) -> crate::rudp::Config {
        let mut p = crate::rudp::Config {
            cluster_id: crate::rudp::cluster_id(&self.cluster),
            // Room for the messaging envelope around a payload of max_message_size.
            max_message_size: self.max_message_size + crate::rpc::ENVELOPE_HEADROOM,
            peer_timeout: self.peer_timeout,
            send_interval: self.send_interval,
            keyring: self.keyring(),
            ..crate::rudp::Config::default()
        };
        let need = p.max_message_size + p.channel_window * usize::from(p.channels);
        if p.max_peer_buffer < need {
            p.max_peer_buffer = need;
        }
        if p.max_total_buffer < p.max_peer_buffer {
            p.max_total_buffer = p.max_peer_buffer;
        }
        if p.max_buffer_per_ip < p.max_peer_buffer {
            p.max_buffer_per_ip = p.max_peer_buffer;
        }
        if p.max_send_queue < p.max_message_size {
            p.max_send_queue = p.max_message_size;
        }
        p
    }

    /// The socket configuration these settings give.
    pub(crate) fn socket(&self) -> crate::transport::socket::SocketConfig {
        crate::transport::socket::SocketConfig {
            address: self.address,
            nic: self.nic.clone(),
            port: self.port,
            port_range: self.port_range,
            advertise: self.advertise,
            ..Default::default()
        }
    }
}

/// Serde helpers for durations written as `"250ms"`, `"1s"`, `"2m"`, `"1h"` or a number of
/// milliseconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `"250ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"100us"` or plain milliseconds.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| "expected a number with a unit: 250ms, 1s, 2m".to_string())?;
        let secs = match unit.trim() {
            "" | "ms" => n / 1000.0,
            "us" => n / 1_000_000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            u => return Err(format!("unknown unit {u:?}: use us, ms, s, m or h")),
        };
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err("out of range".to_string());
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// Formats as milliseconds (`"1500ms"`).
    pub fn format(d: &Duration) -> String {
        format!("{}ms", d.as_millis())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Text(String),
    }

    fn to_duration<'de, D: Deserializer<'de>>(raw: Raw) -> Result<Duration, D::Error> {
        match raw {
            Raw::Num(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(s) => parse(&s).map_err(serde::de::Error::custom),
        }
    }

    /// Serializes a duration.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    /// Deserializes a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        to_duration::<D>(Raw::deserialize(d)?)
    }

    pub(crate) fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<Raw>::deserialize(d)?
            .map(to_duration::<D>)
            .transpose()
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::duration::format(d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::raw(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_json_env_and_validation() {
        let c = MeshConfig::from_toml_str(
            "node_type = \"game\"\nexpiry = 3000\n[discovery]\nbackend = \"seeds\"\nseeds = [\"127.0.0.1:8100\"]\n",
        )
        .unwrap();
        assert_eq!(c.expiry, Some(Duration::from_secs(3)));
        assert!(matches!(c.discovery, DiscoverySpec::Seeds { .. }));
        c.validate().unwrap();

        let e = MeshConfig::from_toml_str("nodetype = \"x\"").unwrap_err();
        assert!(e.problem.contains("nodetype"), "{e}");

        let j =
            MeshConfig::from_json_str(r#"{"node_type":"a","update_interval":"250ms"}"#).unwrap();
        assert_eq!(j.update_interval, Duration::from_millis(250));
        let back = serde_json::to_string(&j).unwrap();
        assert_eq!(MeshConfig::from_json_str(&back).unwrap(), j);

        let env = MeshConfig::default()
            .apply_env([
                ("MESH_NODE_TYPE", "lobby"),
                ("MESH_PORT", "8100"),
                ("MESH_REDIS_URL", "redis://127.0.0.1:1/"),
                ("PATH", "/bin"),
            ])
            .unwrap();
        assert_eq!(env.node_type, "lobby");
        assert_eq!(env.port, 8100);
        assert!(matches!(env.discovery, DiscoverySpec::Redis { .. }));
        let e = MeshConfig::default()
            .apply_env([("MESH_PORT", "lots")])
            .unwrap_err();
        assert_eq!(e.field, "MESH_PORT");
        assert!(MeshConfig::default().reflection);
        let off = MeshConfig::default()
            .apply_env([("MESH_REFLECTION", "false")])
            .unwrap();
        assert!(!off.reflection);
        let e = MeshConfig::default()
            .apply_env([("MESH_REFLECTION", "maybe")])
            .unwrap_err();
        assert_eq!(e.field, "MESH_REFLECTION");
        let toml = MeshConfig::from_toml_str("reflection = false").unwrap();
        assert!(!toml.reflection);

        let field = |c: MeshConfig| c.validate().unwrap_err().field;
        assert_eq!(
            field(MeshConfig {
                node_type: String::new(),
                ..MeshConfig::default()
            }),
            "node_type"
        );
        assert_eq!(
            field(MeshConfig {
                expiry: Some(Duration::from_millis(1200)),
                ..MeshConfig::default()
            }),
            "expiry"
        );
        assert_eq!(
            field(MeshConfig {
                prefix: "a{b}".into(),
                ..MeshConfig::default()
            }),
            "prefix"
        );
        assert_eq!(
            field(MeshConfig {
                discovery: DiscoverySpec::Redis {
                    url: "http://x".into()
                },
                ..MeshConfig::default()
            }),
            "discovery.url"
        );
        assert_eq!(
            field(MeshConfig {
                max_message_size: 0,
                ..MeshConfig::default()
            }),
            "max_message_size"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration::parse("20"), Ok(Duration::from_millis(20)));
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("-1s").is_err());
    }

    #[test]
    fn every_refusal_names_the_field_path() {
        let field = |r: Result<MeshConfig, ConfigError>| r.map(|_| ()).unwrap_err().field;
        // TOML.
        assert_eq!(field(MeshConfig::from_toml_str("port = 70000")), "port");
        assert_eq!(
            field(MeshConfig::from_toml_str("update_interval = \"3 parsecs\"")),
            "update_interval"
        );
        assert_eq!(field(MeshConfig::from_toml_str("colour = 1")), "colour");
        assert_eq!(field(MeshConfig::from_toml_str("port = \"x\"")), "port");
        assert_eq!(
            field(MeshConfig::from_toml_str(
                "[discovery]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1\"\nflavour = 1"
            )),
            "discovery.flavour"
        );
        assert_eq!(
            field(MeshConfig::from_toml_str("[discovery]\nbackend = \"nope\"")),
            "discovery.backend"
        );
        let e = MeshConfig::from_toml_str("port = 1\nport = ")
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.field, "<toml line 2>", "{e}");
        // JSON.
        assert_eq!(
            field(MeshConfig::from_json_str(r#"{"port": 70000}"#)),
            "port"
        );
        assert_eq!(
            field(MeshConfig::from_json_str(
                r#"{"update_interval": "3 parsecs"}"#
            )),
            "update_interval"
        );
        assert_eq!(
            field(MeshConfig::from_json_str(r#"{"colour": 1}"#)),
            "colour"
        );
        assert_eq!(
            field(MeshConfig::from_json_str(
                r#"{"values": {"a": 1}, "role": 5}"#
            )),
            "role"
        );
        assert_eq!(
            field(MeshConfig::from_json_str(r#"{"port": 1"#)),
            "<json line 1>"
        );
        // The problem says what is wrong.
        let e = MeshConfig::from_toml_str("port = 70000")
            .map(|_| ())
            .unwrap_err();
        assert!(
            e.problem.contains("70000") || e.problem.contains("range"),
            "{e}"
        );
    }
}
