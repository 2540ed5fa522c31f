//! Static seeds: a fixed list of addresses, liveness by transport pings (placeholder backend
//! while it is written).

use super::{BackendContext, BoxFuture, DiscoveryBackend, DiscoveryError};

/// Configuration of the static-seeds backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeedsConfig {
    /// `host:port` of the seed nodes.
    pub seeds: Vec<String>,
}

impl SeedsConfig {
    /// A seed list.
    pub fn new<I, S>(seeds: I) -> SeedsConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SeedsConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
        }
    }

    /// Checks the list, naming the bad field.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        if self.seeds.is_empty() {
            return Err(DiscoveryError::Config {
                field: "seeds",
                problem: "needs at least one host:port".into(),
            });
        }
        for s in &self.seeds {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
            if !ok {
                return Err(DiscoveryError::Config {
                    field: "seeds",
                    problem: format!("{s:?} is not host:port"),
                });
            }
        }
        Ok(())
    }
}

/// The static-seeds backend.
#[derive(Debug)]
pub(crate) struct SeedsBackend {
    config: SeedsConfig,
}

impl SeedsBackend {
    pub(crate) fn new(config: SeedsConfig) -> SeedsBackend {
        SeedsBackend { config }
    }
}

impl DiscoveryBackend for SeedsBackend {
    fn name(&self) -> &'static str {
        "seeds"
    }

    fn run(self: Box<Self>, ctx: BackendContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = &self.config;
            ctx.membership.ready(Err(DiscoveryError::Unreachable(
                "the seeds backend is not built yet".into(),
            )));
        })
    }
}
