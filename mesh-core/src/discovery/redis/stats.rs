//! [`RedisStats`]: counters of the Redis backend's traffic and troubles.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct Counters {
    round_trips: AtomicU64,
    garbled: AtomicU64,
    forged: AtomicU64,
    reconnects: AtomicU64,
    full_syncs: AtomicU64,
    lost_messages: AtomicU64,
}

/// Counters of the Redis backend, shared (cheap to clone) by every node started with a
/// [`RedisConfig`](super::RedisConfig) carrying them ([`with_stats`](super::RedisConfig::with_stats)).
///
/// * [`round_trips`](Self::round_trips): requests sent to Redis that wait for a reply — a
///   script run counts one, as does a `SUBSCRIBE` or the `EVAL` retried after a `NOSCRIPT`;
///   the handshake of a new connection (`HELLO`/`AUTH`/`SELECT`, sentinel lookups) is not
///   counted, reconnections are (see [`reconnects`](Self::reconnects)).
/// * [`garbled_records`](Self::garbled_records): records found in Redis that are not a valid
///   node record (skipped).
/// * [`forged_records`](Self::forged_records): with a cluster key, records refused because
///   their MAC is missing or does not verify (written by someone without the key, or
///   altered).
/// * [`reconnects`](Self::reconnects): connections (re-)established after a failure.
/// * [`full_syncs`](Self::full_syncs): full snapshots read (at start, after a reconnect,
///   when Redis lost its data or the change log was trimmed).
/// * [`lost_messages`](Self::lost_messages): pub/sub notifications dropped because the
///   bounded queue was full or that arrived out of sequence (each costs a catch-up read).
///
/// Equality is identity: two values are equal when they share the counters.
#[derive(Clone, Default)]
pub struct RedisStats {
    inner: Arc<Counters>,
}

impl RedisStats {
    /// New counters at zero.
    pub fn new() -> RedisStats {
        RedisStats::default()
    }

    /// Requests that waited for a Redis reply.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Garbled records skipped.
    pub fn garbled_records(&self) -> u64 {
        self.inner.garbled.load(Ordering::Relaxed)
    }

    /// Connections re-established after a failure.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Records refused for a missing or wrong MAC (with a cluster key).
    pub fn forged_records(&self) -> u64 {
        self.inner.forged.load(Ordering::Relaxed)
    }

    /// Full snapshots read.
    pub fn full_syncs(&self) -> u64 {
        self.inner.full_syncs.load(Ordering::Relaxed)
    }

    /// Pub/sub notifications lost or out of sequence.
    pub fn lost_messages(&self) -> u64 {
        self.inner.lost_messages.load(Ordering::Relaxed)
    }

    pub(super) fn round_trip(&self) {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn garbled(&self) {
        self.inner.garbled.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn forged(&self) {
        self.inner.forged.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reconnect(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn full_sync(&self) {
        self.inner.full_syncs.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn lost_message(&self) {
        self.inner.lost_messages.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for RedisStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStats")
            .field("round_trips", &self.round_trips())
            .field("garbled_records", &self.garbled_records())
            .field("forged_records", &self.forged_records())
            .field("reconnects", &self.reconnects())
            .field("full_syncs", &self.full_syncs())
            .field("lost_messages", &self.lost_messages())
            .finish()
    }
}

impl PartialEq for RedisStats {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for RedisStats {}
