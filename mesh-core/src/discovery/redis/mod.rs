//! Discovery over Redis (standalone, Sentinel or Cluster).

mod backend;

use std::time::Duration;

pub(crate) use backend::RedisBackend;

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
}

impl RedisConfig {
    fn with_mode(mode: RedisMode) -> RedisConfig {
        RedisConfig {
            mode,
            password: None,
            db: 0,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
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
