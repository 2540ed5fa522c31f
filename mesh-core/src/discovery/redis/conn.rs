//! Connections to Redis: a command connection (multiplexed, or a cluster connection) and a
//! pub/sub subscription, established together and dropped together on any failure.
//!
//! Standalone: both to the URL. Sentinel: the sentinels are asked for the master on every
//! connect. Cluster: commands through the cluster client (scripts are routed by their first
//! key); the subscription to one of the seed nodes (classic `PUBLISH` reaches every node),
//! the next seed on each reconnect.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, Value,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{RedisConfig, RedisMode, RedisStats};

/// Pub/sub notifications queued at most (beyond: dropped and counted, then caught up).
pub(super) const EVENT_QUEUE: usize = 4096;

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    /// Redis (or the connection) reported an error.
    #[error("{0}")]
    Redis(#[from] RedisError),
    /// No connection or reply in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The sentinels could not name a master.
    #[error("sentinel: {0}")]
    Sentinel(String),
    /// Redis answered something unexpected.
    #[error("{0}")]
    Protocol(String),
}

impl LinkError {
    /// Whether it is a timeout (rather than a refusal or an error reply).
    pub(super) fn is_timeout(&self) -> bool {
        match self {
            LinkError::Timeout(_) => true,
            LinkError::Redis(e) => e.is_timeout(),
            _ => false,
        }
    }
}

/// The command side of a link.
enum Commands {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// One established link: commands plus the subscription's reader task.
pub(super) struct Link {
    commands: Commands,
    timeout: Duration,
    stats: RedisStats,
    reader: JoinHandle<()>,
    /// Set by the reader when the queue was full and a notification was dropped.
    lost: Arc<AtomicBool>,
    /// Where Redis is (for logs).
    pub(super) target: String,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// Sends one command and waits (bounded) for its reply.
    pub(super) async fn query(&mut self, cmd: &redis::Cmd) -> Result<Value, LinkError> {
        self.stats.round_trip();
        let reply = match &mut self.commands {
            Commands::Single(c) => {
                tokio::time::timeout(self.timeout, cmd.query_async::<Value>(c)).await
            }
            Commands::Cluster(c) => {
                tokio::time::timeout(self.timeout, cmd.query_async::<Value>(c)).await
            }
        };
        reply
            .map_err(|_| LinkError::Timeout(self.timeout))?
            .map_err(LinkError::from)
    }

    /// Whether the reader dropped a notification since the last call.
    pub(super) fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::AcqRel)
    }
}

/// Makes links for one configuration (keeps the sentinel client and the cluster client).
pub(super) struct Connector {
    config: RedisConfig,
    stats: RedisStats,
    sentinel: Option<SentinelClient>,
    cluster: Option<redis::cluster::ClusterClient>,
    /// Next cluster seed to subscribe on.
    next_seed: usize,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("mode", &self.config.mode)
            .finish_non_exhaustive()
    }
}

/// The URL's connection info with the configured password and db applied.
fn node_info(url: &str, password: Option<&str>, db: i64) -> Result<ConnectionInfo, LinkError> {
    let info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(pw) = password {
        settings = settings.set_password(pw);
    }
    if db != 0 {
        settings = settings.set_db(db);
    }
    Ok(info.set_redis_settings(settings))
}

/// `host:port` of a URL, without credentials (for logs).
fn display_target(url: &str) -> String {
    match url.into_connection_info() {
        Ok(i) => i.addr().to_string(),
        Err(_) => "<bad url>".to_string(),
    }
}

impl Connector {
    pub(super) fn new(config: RedisConfig, stats: RedisStats) -> Connector {
        Connector {
            config,
            stats,
            sentinel: None,
            cluster: None,
            next_seed: 0,
        }
    }

    /// Where Redis is, for messages.
    pub(super) fn describe(&self) -> String {
        match &self.config.mode {
            RedisMode::Standalone { url } => format!("redis at {}", display_target(url)),
            RedisMode::Sentinel {
                sentinels,
                master_name,
            } => format!(
                "master {master_name:?} of sentinels {}",
                sentinels
                    .iter()
                    .map(|s| display_target(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            RedisMode::Cluster { nodes } => format!(
                "redis cluster at {}",
                nodes
                    .iter()
                    .map(|s| display_target(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn conn_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout))
    }

    /// A bound for a whole connect (lookups, handshake, subscribe).
    fn connect_bound(&self) -> Duration {
        self.config.connect_timeout * 2 + self.config.response_timeout * 2
    }

    /// Connects and subscribes to `channel`; notifications go to the returned receiver,
    /// which closes when the subscription is lost.
    pub(super) async fn connect(
        &mut self,
        channel: &str,
    ) -> Result<(Link, mpsc::Receiver<Vec<u8>>), LinkError> {
        let bound = self.connect_bound();
        match tokio::time::timeout(bound, self.connect_inner(channel)).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Timeout(bound)),
        }
    }

    async fn connect_inner(
        &mut self,
        channel: &str,
    ) -> Result<(Link, mpsc::Receiver<Vec<u8>>), LinkError> {
        let (commands, pubsub_client, target) = match self.config.mode.clone() {
            RedisMode::Standalone { url } => {
                let client = Client::open(node_info(
                    &url,
                    self.config.password.as_deref(),
                    self.config.db,
                )?)?;
                let c = client
                    .get_multiplexed_async_connection_with_config(&self.conn_config())
                    .await?;
                (Commands::Single(c), client, display_target(&url))
            }
            RedisMode::Sentinel {
                sentinels,
                master_name,
            } => {
                let client = self.sentinel_master(&sentinels, &master_name).await?;
                let target = client.get_connection_info().addr().to_string();
                let c = client
                    .get_multiplexed_async_connection_with_config(&self.conn_config())
                    .await?;
                (Commands::Single(c), client, target)
            }
            RedisMode::Cluster { nodes } => {
                let cluster = self.cluster_client(&nodes)?;
                let c = cluster.get_async_connection().await?;
                let seed = self.next_seed % nodes.len().max(1);
                self.next_seed = self.next_seed.wrapping_add(1);
                let url = nodes.get(seed).cloned().unwrap_or_default();
                let client = Client::open(node_info(&url, self.config.password.as_deref(), 0)?)?;
                (
                    Commands::Cluster(c),
                    client,
                    format!("cluster (subscribed at {})", display_target(&url)),
                )
            }
        };
        let mut pubsub = pubsub_client.get_async_pubsub().await?;
        self.stats.round_trip();
        pubsub.subscribe(channel).await?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let lost = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_messages(pubsub, tx, lost.clone(), self.stats.clone()));
        Ok((
            Link {
                commands,
                timeout: self.config.response_timeout,
                stats: self.stats.clone(),
                reader,
                lost,
                target,
            },
            rx,
        ))
    }

    /// Asks the sentinels for the master (a fresh answer on every call).
    async fn sentinel_master(
        &mut self,
        sentinels: &[String],
        master_name: &str,
    ) -> Result<Client, LinkError> {
        if self.sentinel.is_none() {
            let mut settings = RedisConnectionInfo::default();
            if let Some(pw) = &self.config.password {
                settings = settings.set_password(pw);
            }
            if self.config.db != 0 {
                settings = settings.set_db(self.config.db);
            }
            let info = SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
            if sentinels.is_empty() {
                return Err(LinkError::Sentinel("no sentinel address".into()));
            }
            self.sentinel = Some(SentinelClient::build(
                sentinels.to_vec(),
                master_name.to_string(),
                Some(info),
                SentinelServerType::Master,
            )?);
        }
        let Some(sentinel) = self.sentinel.as_mut() else {
            return Err(LinkError::Sentinel("no sentinel client".into()));
        };
        match sentinel.async_get_client().await {
            Ok(c) => Ok(c),
            Err(e) => {
                // Start afresh next time (the client caches sentinel connections).
                self.sentinel = None;
                Err(LinkError::Sentinel(e.to_string()))
            }
        }
    }

    fn cluster_client(
        &mut self,
        nodes: &[String],
    ) -> Result<redis::cluster::ClusterClient, LinkError> {
        if let Some(c) = &self.cluster {
            return Ok(c.clone());
        }
        let mut b = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(self.config.connect_timeout)
            .response_timeout(self.config.response_timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if let Some(pw) = &self.config.password {
            b = b.password(pw);
        }
        let c = b.build()?;
        self.cluster = Some(c.clone());
        Ok(c)
    }
}

/// Forwards notifications into the bounded queue until the subscription ends; a full queue
/// drops the notification and raises `lost` (the backend then catches up from the log).
async fn read_messages(
    pubsub: redis::aio::PubSub,
    tx: mpsc::Sender<Vec<u8>>,
    lost: Arc<AtomicBool>,
    stats: RedisStats,
) {
    let mut stream = pubsub.into_on_message();
    while let Some(msg) = stream.next().await {
        match tx.try_send(msg.get_payload_bytes().to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.lost_message();
                lost.store(true, Ordering::Release);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
    tracing::debug!("redis subscription ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_and_db_override_the_url() {
        let i = node_info("redis://:a@127.0.0.1:1/3", None, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.redis_settings().password(), Some("a"));
        assert_eq!(i.redis_settings().db(), 3);
        let i = node_info("redis://127.0.0.1:1", Some("b"), 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.redis_settings().password(), Some("b"));
        assert_eq!(i.redis_settings().db(), 2);
        assert_eq!(
            display_target("redis://:secret@127.0.0.1:7/"),
            "127.0.0.1:7"
        );
    }
}
