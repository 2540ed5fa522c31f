//! The Redis backend's task: registers, heartbeats, applies changes, reconnects, leaves.
//!
//! One task per node, one `select!` loop: heartbeat ticks, pushes of local changes
//! (rate-limited to one per tenth of an interval), the lease holder's reaping calls,
//! notifications from the subscription, requested syncs and reconnects. Every Redis call is
//! awaited in the loop, so at most one is in flight per node and the order of applied changes
//! is the order of the change counter.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::conn::{Connector, Link, LinkError};
use super::script::{self, Call, Keys, Op, Script};
use super::seal::RecordSeal;
use super::sync::{Notified, SyncState};
use super::{RedisConfig, RedisStats};
use crate::discovery::{
    BackendContext, BoxFuture, DiscoveryBackend, DiscoveryError, Health, Membership,
};
use crate::transport::Transport;

/// Connection attempts at start when connecting times out.
const START_ATTEMPTS: u32 = 3;

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
        // The transport inbox is not used: everything goes through Redis. The transport's
        // keyring seals the records.
        let BackendContext {
            membership,
            transport,
            ..
        } = ctx;
        Box::pin(run(self.config, membership, transport))
    }
}

async fn run(config: RedisConfig, m: Membership, transport: Transport) {
    let mut d = match Driver::new(config, m.clone(), transport) {
        Ok(d) => d,
        Err(e) => {
            m.ready(Err(e));
            return;
        }
    };
    match d.start().await {
        Ok(()) => m.ready(Ok(())),
        Err(e) => {
            tracing::warn!(error = %e, "redis discovery could not start");
            m.ready(Err(e));
            return;
        }
    }
    d.run().await;
    d.leave().await;
}

/// The periods derived from the settings.
#[derive(Debug, Clone, Copy)]
struct Timing {
    interval: Duration,
    expiry: Duration,
    /// Soonest a local change is pushed after the previous push.
    push_gap: Duration,
    /// Shortest wait between two reaping calls (bounds the lease holder's load).
    reap_min: Duration,
    /// Silence in Redis's record of heartbeats that counts as an outage.
    outage_gap: Duration,
    /// How long after an outage (or data loss) nobody is removed.
    grace: Duration,
    backoff_base: Duration,
    backoff_cap: Duration,
}

impl Timing {
    fn new(interval: Duration, expiry: Duration) -> Timing {
        let interval = interval.max(Duration::from_millis(10));
        let expiry = expiry.max(interval);
        let tenth = (interval / 10).max(Duration::from_millis(5));
        let backoff_cap = interval.clamp(Duration::from_millis(100), Duration::from_secs(5));
        Timing {
            interval,
            expiry,
            push_gap: tenth,
            // Reaping calls happen only as dead nodes' deadlines come: at most 50 per interval,
            // and a dead node is removed within 2% of an interval of its deadline.
            reap_min: (interval / 50).max(Duration::from_millis(5)),
            outage_gap: interval * 3 / 2,
            grace: expiry * 2 + interval + backoff_cap,
            backoff_base: (interval / 10)
                .clamp(Duration::from_millis(10), Duration::from_millis(500)),
            backoff_cap,
        }
    }

    /// The wait before reconnect attempt `n` (1-based): exponential, capped, jittered.
    fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.backoff_cap);
        exp.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// Why the loop woke up.
enum Wake {
    Stop,
    Message(Option<Vec<u8>>),
    Tick,
    Reap,
    Push,
    LocalChanged,
    SyncRequested,
    Reconnect,
}

struct Driver {
    m: Membership,
    keys: Keys,
    script: Script,
    connector: Connector,
    link: Option<Link>,
    events: Option<mpsc::Receiver<Vec<u8>>>,
    sync: SyncState,
    stats: RedisStats,
    t: Timing,
    /// The local id (registered unless a guest; names the lease holder).
    id: String,
    guest: bool,
    local_rx: watch::Receiver<u64>,
    /// `begin_sync` was called and its `end_sync` is due (after a failure: once a later
    /// sync succeeds).
    sync_open: bool,
    lease_held: bool,
    reap_at: Option<Instant>,
    push_at: Option<Instant>,
    last_push: Instant,
    reconnect_at: Option<Instant>,
    failures: u32,
    catch_up: bool,
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn new(
        config: RedisConfig,
        m: Membership,
        transport: Transport,
    ) -> Result<Driver, DiscoveryError> {
        let settings = m.settings().clone();
        let prefix = &settings.prefix;
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(DiscoveryError::Config {
                field: "prefix",
                problem: format!("{prefix:?} cannot be a Redis hash tag (empty, or has braces)"),
            });
        }
        let stats = config.stats.clone().unwrap_or_default();
        let t = Timing::new(settings.update_interval, settings.expiry);
        let guest = settings.guest;
        Ok(Driver {
            keys: Keys::new(prefix),
            script: Script::new(),
            connector: Connector::new(config, stats.clone()),
            link: None,
            events: None,
            sync: SyncState::new(t.grace, stats.clone(), RecordSeal::new(transport, prefix)),
            stats,
            t,
            id: m.local_id().to_string(),
            guest,
            local_rx: m.watch_local(),
            sync_open: false,
            lease_held: false,
            reap_at: None,
            push_at: None,
            last_push: Instant::now(),
            reconnect_at: None,
            failures: 0,
            catch_up: false,
            m,
        })
    }

    /// Connects, registers and reads the first view.
    async fn start(&mut self) -> Result<(), DiscoveryError> {
        let where_ = self.connector.describe();
        let mut attempt = 0;
        let connected = loop {
            attempt += 1;
            let r = tokio::select! {
                r = self.connector.connect(&self.keys.channel) => r,
                _ = self.m.stopping() => return Err(DiscoveryError::Stopped),
            };
            match r {
                // A refused connection fails at once; a slow one (busy host) gets two more
                // tries (start_timeout bounds the whole start).
                Err(e) if e.is_timeout() && attempt < START_ATTEMPTS => {
                    tracing::info!(error = %e, attempt, "redis: connecting timed out; retrying");
                    tokio::time::sleep(self.t.backoff(attempt)).await;
                }
                r => break r,
            }
        };
        let (link, events) = connected
            .map_err(|e| DiscoveryError::Unreachable(format!("cannot connect to {where_}: {e}")))?;
        tracing::info!(target_addr = %link.target, guest = self.guest, "redis: connected");
        self.link = Some(link);
        self.events = Some(events);
        self.open_sync();
        self.local_rx.borrow_and_update();
        let op = self.heartbeat_op();
        self.call(op).await.map_err(|e| {
            DiscoveryError::Unreachable(format!("registration with {where_} failed: {e}"))
        })?;
        self.close_sync();
        self.last_push = Instant::now();
        Ok(())
    }

    fn heartbeat_op(&self) -> Op {
        if self.guest { Op::Watch } else { Op::Heartbeat }
    }

    fn open_sync(&mut self) {
        if !self.sync_open {
            self.m.begin_sync();
            self.sync_open = true;
        }
    }

    fn close_sync(&mut self) {
        if self.sync_open {
            self.sync_open = false;
            self.m.end_sync();
        }
    }

    /// Runs the script once and applies its reply.
    async fn call(&mut self, op: Op) -> Result<(), LinkError> {
        let record = if op == Op::Heartbeat {
            let json = serde_json::to_string(&self.m.local_record())
                .map_err(|e| LinkError::Protocol(format!("cannot encode the local record: {e}")))?;
            self.sync.seal(json)
        } else {
            String::new()
        };
        let Some(link) = self.link.as_mut() else {
            return Err(LinkError::Protocol("not connected".into()));
        };
        let call = Call {
            op,
            id: &self.id,
            record: &record,
            expiry: self.t.expiry,
            lease: self.t.expiry,
            epoch: self.sync.epoch(),
            seq: self.sync.seq(),
            verify_tag: self.sync.verify_tag(),
            outage_gap: self.t.outage_gap,
            grace: self.t.grace,
        };
        let value = self.script.run(link, &self.keys, &call).await?;
        if op == Op::Leave {
            return Ok(());
        }
        let reply = script::parse_reply(&value)?;
        let now = Instant::now();
        if reply.lease_held != self.lease_held {
            self.lease_held = reply.lease_held;
            if reply.lease_held {
                tracing::info!("redis: this node now reaps expired nodes (holds the lease)");
            } else {
                tracing::debug!("redis: lease held by another node");
            }
        }
        self.reap_at = match (reply.lease_held, reply.next_reap_ms) {
            (true, Some(ms)) => {
                // A millisecond late so the deadline has passed on the server too.
                let wait = (Duration::from_millis(ms) + Duration::from_millis(1))
                    .clamp(self.t.reap_min, self.t.interval);
                (wait < self.t.interval).then(|| now + wait)
            }
            _ => None,
        };
        self.sync.apply_reply(&self.m, reply, now.into_std());
        Ok(())
    }

    async fn run(&mut self) {
        let start = Instant::now() + self.t.interval;
        let mut tick = tokio::time::interval_at(start, self.t.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = {
                let m = &self.m;
                let events = &mut self.events;
                let local_rx = &mut self.local_rx;
                let message = async move {
                    match events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                // Timers before notifications, so a flood of them cannot delay heartbeats.
                tokio::select! {
                    biased;
                    _ = m.stopping() => Wake::Stop,
                    _ = sleep_opt(self.reconnect_at) => Wake::Reconnect,
                    _ = tick.tick() => Wake::Tick,
                    _ = sleep_opt(self.reap_at) => Wake::Reap,
                    _ = sleep_opt(self.push_at) => Wake::Push,
                    _ = m.sync_requested() => Wake::SyncRequested,
                    _ = local_rx.changed() => Wake::LocalChanged,
                    msg = message => Wake::Message(msg),
                }
            };
            match wake {
                Wake::Stop => return,
                Wake::Message(Some(payload)) => {
                    if self.sync.on_message(&self.m, &payload) == Notified::CatchUp {
                        self.catch_up = true;
                    }
                }
                Wake::Message(None) => {
                    self.fail(&LinkError::Protocol("the subscription was closed".into()));
                }
                Wake::Reconnect => self.reconnect().await,
                Wake::Tick | Wake::SyncRequested => {
                    if self.link.is_some() {
                        self.open_sync();
                        self.local_rx.borrow_and_update();
                        self.push_at = None;
                        self.exchange(self.heartbeat_op(), true).await;
                    }
                }
                Wake::Reap => {
                    self.reap_at = None;
                    self.exchange(self.heartbeat_op(), false).await;
                }
                Wake::Push => {
                    self.push_at = None;
                    if self.link.is_some() {
                        self.local_rx.borrow_and_update();
                        self.exchange(Op::Heartbeat, false).await;
                    }
                }
                Wake::LocalChanged => {
                    if self.guest {
                        self.local_rx.borrow_and_update();
                    } else if self.push_at.is_none() {
                        let at = (self.last_push + self.t.push_gap).max(Instant::now());
                        self.push_at = Some(at);
                    }
                }
            }
            if self.link.as_ref().is_some_and(Link::take_lost) {
                self.catch_up = true;
            }
            if self.catch_up && self.link.is_some() {
                // A read: a missed notification, or a new epoch (re-registration follows
                // with the next heartbeat).
                self.catch_up = false;
                self.exchange(Op::Sync, false).await;
            }
        }
    }

    /// One call with the link up; `sync` closes the open sync on success. Failures drop the
    /// link.
    async fn exchange(&mut self, op: Op, sync: bool) {
        if self.link.is_none() {
            return;
        }
        match self.call(op).await {
            Ok(()) => {
                if op == Op::Heartbeat {
                    self.last_push = Instant::now();
                }
                if sync {
                    self.close_sync();
                }
            }
            Err(e) => self.fail(&e),
        }
    }

    /// The link failed: freeze the view, report degraded health, schedule a reconnect.
    fn fail(&mut self, e: &LinkError) {
        if self.link.take().is_some() {
            tracing::warn!(error = %e, "redis: connection lost; the view is frozen until it is back");
        }
        self.events = None;
        self.reap_at = None;
        self.lease_held = false;
        self.sync.reconnecting();
        self.m.set_health(Health::Degraded {
            reason: format!("{}: {e}", self.connector.describe()),
        });
        self.failures = self.failures.saturating_add(1);
        self.reconnect_at = Some(Instant::now() + self.t.backoff(self.failures));
    }

    async fn reconnect(&mut self) {
        self.reconnect_at = None;
        let connected = tokio::select! {
            r = self.connector.connect(&self.keys.channel) => r,
            _ = self.m.stopping() => return,
        };
        match connected {
            Ok((link, events)) => {
                self.stats.reconnect();
                tracing::info!(
                    target_addr = %link.target,
                    attempts = self.failures,
                    "redis: reconnected; registering and resyncing"
                );
                self.link = Some(link);
                self.events = Some(events);
                self.open_sync();
                self.local_rx.borrow_and_update();
                self.push_at = None;
                match self.call(self.heartbeat_op()).await {
                    Ok(()) => {
                        self.failures = 0;
                        self.last_push = Instant::now();
                        self.m.set_health(Health::Healthy);
                        self.close_sync();
                    }
                    Err(e) => self.fail(&e),
                }
            }
            Err(e) => {
                if self.failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, attempts = self.failures, "redis: still unreachable; retrying");
                } else {
                    tracing::debug!(error = %e, attempt = self.failures, "redis: reconnect failed");
                }
                self.fail(&e);
            }
        }
    }

    /// Deregisters (peers see a graceful leave at once) and gives the lease up. Bounded.
    async fn leave(&mut self) {
        if self.guest && !self.lease_held {
            return;
        }
        let bound = Duration::from_millis(500);
        if self.link.is_none()
            && let Ok(Ok((link, _events))) =
                tokio::time::timeout(bound, self.connector.connect(&self.keys.channel)).await
        {
            self.link = Some(link);
        }
        if self.link.is_none() {
            tracing::warn!(
                "redis: cannot deregister (Redis unreachable); peers will expire this node"
            );
            return;
        }
        match tokio::time::timeout(bound * 2, self.call(Op::Leave)).await {
            Ok(Ok(())) => tracing::info!("redis: deregistered"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis: deregistration failed; peers will expire this node")
            }
            Err(_) => {
                tracing::warn!("redis: deregistration timed out; peers will expire this node")
            }
        }
        self.link = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_is_bounded() {
        let t = Timing::new(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(t.push_gap, Duration::from_millis(100));
        assert!(t.grace > t.expiry * 2);
        for n in 1..40 {
            let b = t.backoff(n);
            assert!(b <= t.backoff_cap, "{b:?}");
            assert!(b >= t.backoff_base / 2, "{b:?}");
        }
        let fast = Timing::new(Duration::from_millis(1), Duration::from_millis(1));
        assert!(fast.push_gap >= Duration::from_millis(5));
        assert!(fast.expiry >= fast.interval);
    }
}
