//! The Redis backend (placeholder while it is written: refuses to start).

use super::RedisConfig;
use crate::discovery::{BackendContext, BoxFuture, DiscoveryBackend, DiscoveryError};

/// Discovery over Redis.
#[derive(Debug)]
pub(crate) struct RedisBackend {
    config: RedisConfig,
}

impl RedisBackend {
    pub(crate) fn new(config: RedisConfig) -> RedisBackend {
        RedisBackend { config }
    }
}

impl DiscoveryBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn run(self: Box<Self>, ctx: BackendContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = &self.config;
            ctx.membership.ready(Err(DiscoveryError::Unreachable(
                "the Redis backend is not built yet".into(),
            )));
        })
    }
}
