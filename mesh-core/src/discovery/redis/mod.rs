//! Discovery over Redis (standalone, Sentinel or Cluster).
//!
//! # Key layout
//!
//! Every key of a cluster of nodes lives under one hash tag, `{<prefix>}`, so they share one
//! slot on Redis Cluster and one Lua script can touch them all; clusters with different
//! prefixes share a Redis without seeing each other.
//!
//! | key | type | what |
//! |---|---|---|
//! | `{p}:hb` | ZSET | member = node id (`ADDR#INCARNATION`), score = its deadline: Redis server time (ms) of its last heartbeat plus its expiry |
//! | `{p}:nodes` | HASH | node id -> its record as JSON |
//! | `{p}:seq` | string | change counter (INCR) |
//! | `{p}:log` | STREAM | the changes, entry id `0-<seq>`, fields `tag` (server time of the change), `op` (`join`, `update`, `leave`, `expire`), `id`, `rec`; trimmed to about 4096 entries |
//! | `{p}:epoch` | string | random, created when missing: a new epoch means Redis lost its data |
//! | `{p}:lease` | string | the reaper lease (holder's node id, with a TTL of its expiry) |
//! | `{p}:alive` | string | server time of the last heartbeat of any node (detects outages) |
//! | `{p}:grace` | string | after an outage: no node is reaped before this server time |
//! | `{p}:maxgrace` | string | the longest grace any node needs (slow heartbeats need longer) |
//!
//! Every change is also published on the channel `{p}:chg` as
//! `epoch\nseq\ntag\nop\nid\nrecord` so the other nodes apply it at once.
//!
//! # Protocol
//!
//! Each node runs one Lua script per heartbeat (one round trip): it refreshes its deadline
//! (server clock: the nodes' clocks need not agree), rewrites its record if it changed or is
//! missing (also after Redis restarted empty), takes or renews the reaper lease and, as the
//! lease holder, removes members whose deadline passed (bounded per call); it answers with the
//! epoch, the change counter and the changes since the node's last one (or a full snapshot
//! when the log was trimmed or the epoch changed). Pub/sub is at-most-once; the counter makes
//! every heartbeat a catch-up, so a lost message costs at most one interval. No SCAN, no
//! per-node reads: the load per node does not grow with the cluster.
//!
//! While Redis is unreachable the view is frozen (never emptied), health is
//! [`Degraded`](crate::discovery::Health::Degraded), and the node reconnects with jittered
//! backoff (asking the sentinels for the master again each time), then re-registers and
//! continues from the log if the server still holds the last change it applied (same epoch,
//! same tag at its seq), else reads a full snapshot. A heartbeat gap longer than 1.5
//! intervals in Redis's own record of activity is an outage: nobody is reaped for a grace
//! period, so live nodes are not evicted because their last heartbeat looks old. Nodes
//! missing after Redis lost its data get the same grace before they leave the view. Garbled
//! records are skipped, logged and counted ([`RedisStats`]).
//!
//! The lease holder schedules its next reaping call at the earliest deadline, so a killed
//! node leaves every view about `expiry` after its last heartbeat; a graceful stop removes the
//! node and publishes the leave at once. Guests do not register but may hold the lease.

mod backend;
mod conn;
mod script;
mod seal;
mod stats;
mod sync;

use std::time::Duration;

pub(crate) use backend::RedisBackend;
pub use stats::RedisStats;

use super::DiscoveryError;

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisMode {
    /// One server: `redis://[:password@]host:port[/db]`.
    Standalone {
        /// Its URL.
        url: String,
    },
    /// A master found through Sentinel.
    Sentinel {
        /// Sentinel URLs (`redis://host:port`).
        sentinels: Vec<String>,
        /// The monitored master's name.
        master_name: String,
    },
    /// A Redis Cluster.
    Cluster {
        /// A few of its nodes' URLs.
        nodes: Vec<String>,
    },
}

/// Configuration of the Redis backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is.
    pub mode: RedisMode,
    /// Password of the Redis data nodes (for standalone it can also be in the URL).
    pub password: Option<String>,
    /// Database number (standalone and Sentinel).
    pub db: i64,
    /// Longest wait for a connection (default 1 s).
    pub connect_timeout: Duration,
    /// Longest wait for a reply (default 1 s).
    pub response_timeout: Duration,
    /// Counters to share with the caller (see [`RedisStats`]); each node counts into its own
    /// when this is `None`.
    pub stats: Option<RedisStats>,
}

impl RedisConfig {
    fn with_mode(mode: RedisMode) -> RedisConfig {
        RedisConfig {
            mode,
            password: None,
            db: 0,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            stats: None,
        }
    }

    /// Redis standalone.
    pub fn standalone(url: impl Into<String>) -> RedisConfig {
        Self::with_mode(RedisMode::Standalone { url: url.into() })
    }

    /// Redis Sentinel.
    pub fn sentinel<I, S>(sentinels: I, master_name: impl Into<String>) -> RedisConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_mode(RedisMode::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master_name: master_name.into(),
        })
    }

    /// Redis Cluster.
    pub fn cluster<I, S>(nodes: I) -> RedisConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_mode(RedisMode::Cluster {
            nodes: nodes.into_iter().map(Into::into).collect(),
        })
    }

    /// Sets the password of the data nodes.
    pub fn password(mut self, password: impl Into<String>) -> RedisConfig {
        self.password = Some(password.into());
        self
    }

    /// Sets the database number (standalone and Sentinel; for standalone it can also be the
    /// URL's path).
    pub fn db(mut self, db: i64) -> RedisConfig {
        self.db = db;
        self
    }

    /// Sets the connect and reply timeouts.
    pub fn timeouts(mut self, connect: Duration, response: Duration) -> RedisConfig {
        self.connect_timeout = connect;
        self.response_timeout = response;
        self
    }

    /// Counts this configuration's Redis traffic into `stats` (shared by every node started
    /// with it, e.g. for a benchmark).
    pub fn with_stats(mut self, stats: RedisStats) -> RedisConfig {
        self.stats = Some(stats);
        self
    }

    /// Checks URLs and names, naming the bad field.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        let check = |field: &'static str, url: &str| {
            let ok = (url.starts_with("redis://") || url.starts_with("rediss://"))
                && ::redis::Client::open(url).is_ok();
            if ok {
                Ok(())
            } else {
                Err(DiscoveryError::Config {
                    field,
                    problem: format!("{url:?} is not a redis:// URL"),
                })
            }
        };
        let nonempty = |field: &'static str, n: usize| {
            if n == 0 {
                Err(DiscoveryError::Config {
                    field,
                    problem: "needs at least one address".into(),
                })
            } else {
                Ok(())
            }
        };
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if d.is_zero() {
                return Err(DiscoveryError::Config {
                    field,
                    problem: "must be more than zero".into(),
                });
            }
        }
        match &self.mode {
            RedisMode::Standalone { url } => check("url", url),
            RedisMode::Sentinel {
                sentinels,
                master_name,
            } => {
                nonempty("sentinels", sentinels.len())?;
                if master_name.is_empty() {
                    return Err(DiscoveryError::Config {
                        field: "master_name",
                        problem: "must not be empty".into(),
                    });
                }
                sentinels.iter().try_for_each(|u| check("sentinels", u))
            }
            RedisMode::Cluster { nodes } => {
                nonempty("nodes", nodes.len())?;
                nodes.iter().try_for_each(|u| check("nodes", u))
            }
        }
    }
}

/// Parses a change notification as the backend does (for the fuzz target), and the record
/// it carries.
pub(crate) fn fuzz_notification(payload: &[u8]) {
    if let Some((_, entry)) = script::LogEntry::parse_message(payload) {
        let _ = serde_json::from_str::<crate::NodeRecord>(&entry.rec);
    }
}
