//! Static seeds: a fixed list of addresses, for small fixed fleets with no Redis.
//!
//! Every node announces its record to every seed each update interval over the transport
//! (reliable messages on the transport's discovery channel, so a dead seed is declared unreachable
//! by the transport's own liveness). A seed answers with every record it knows and how long
//! ago it last heard from each; nodes learn each other through the seeds and drop a node
//! nobody has heard from for `expiry`. A stopping node tells everyone it knows at once, and
//! is remembered as gone for `expiry` so a late report cannot bring it back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{BackendContext, BoxFuture, DiscoveryBackend, DiscoveryError, Health, LeaveReason};
use crate::node::{NodeId, NodeRecord};
use crate::transport::Transport;

/// The most nodes one seed reports, and one node tracks (the view of a small fixed fleet).
const MAX_NODES: usize = 4096;

/// How far ahead of our wall clock a record's start may claim to be: a later start wins an
/// address, so a record "started" far in the future would evict the real node there.
const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(300);

/// Whether `rec` claims a start no later than `MAX_CLOCK_AHEAD` past our clock.
fn plausible(rec: &NodeRecord) -> bool {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    rec.started_at_ms <= now_ms.saturating_add(MAX_CLOCK_AHEAD.as_millis() as u64)
}

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

/// What seeds-discovery nodes say to each other.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// "Here I am" (guests send no record); `want_view` asks for a [`Msg::View`].
    Announce {
        me: Option<NodeRecord>,
        want_view: bool,
    },
    /// Every record the sender knows, with how long ago (ms) it last heard of each.
    View { nodes: Vec<(NodeRecord, u64)> },
    /// The sender is stopping.
    Leave { id: NodeId },
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
        Box::pin(run(self.config, ctx))
    }
}

/// The first bytes of every seeds message: a tag and the format's version.
const SEEDS_HEADER: [u8; 2] = [0x5d, 1];

/// A seeds message as it travels: the header, then the message as JSON.
fn encode(msg: &Msg) -> Result<Bytes, serde_json::Error> {
    let mut out = SEEDS_HEADER.to_vec();
    serde_json::to_writer(&mut out, msg)?;
    Ok(Bytes::from(out))
}

/// Why a seeds message was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("not a seeds message of this version (header {0:02x?})")]
    Header(Vec<u8>),
    #[error("not a seeds message: {0}")]
    Body(#[from] serde_json::Error),
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Msg, Malformed> {
    let Some(body) = bytes.strip_prefix(&SEEDS_HEADER[..]) else {
        return Err(Malformed::Header(bytes.iter().take(2).copied().collect()));
    };
    Ok(serde_json::from_slice(body)?)
}

fn send(transport: &Transport, to: SocketAddr, msg: &Msg) {
    match encode(msg) {
        Ok(bytes) => {
            if let Err(e) = transport.try_queue(to, super::DISCOVERY_CHANNEL, bytes) {
                tracing::debug!(%to, error = %e, "seeds: message not sent");
            }
        }
        Err(e) => tracing::warn!(error = %e, "seeds: cannot encode a discovery message"),
    }
}

async fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in seeds {
        if let Ok(a) = s.parse::<SocketAddr>() {
            out.push(a);
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::lookup_host(s.as_str()))
            .await
        {
            Ok(Ok(mut it)) => out.extend(it.next()),
            Ok(Err(e)) => tracing::debug!(seed = %s, error = %e, "seeds: cannot resolve"),
            Err(_) => tracing::debug!(seed = %s, "seeds: resolving timed out"),
        }
    }
    out.sort();
    out.dedup();
    out
}

struct State {
    /// When we last heard of each node (directly or through a seed).
    heard: HashMap<NodeId, Instant>,
    /// Nodes that left recently: ignored until the instant.
    gone: HashMap<NodeId, Instant>,
    /// The last time any seed answered.
    last_answer: Option<Instant>,
}

async fn run(config: SeedsConfig, ctx: BackendContext) {
    let BackendContext {
        membership: m,
        transport,
        mut inbox,
        ..
    } = ctx;
    let interval = m.settings().update_interval;
    let expiry = m.settings().expiry;
    let guest = m.settings().guest;
    let me = m.local_id();
    let mine = |a: &SocketAddr| *a == me.addr || *a == transport.local_addr();
    let mut st = State {
        heard: HashMap::new(),
        gone: HashMap::new(),
        last_answer: None,
    };
    let mut seeds = resolve(&config.seeds).await;
    let am_seed = seeds.iter().any(mine);
    seeds.retain(|a| !mine(a));
    let announce = |seeds: &[SocketAddr]| {
        let me = (!guest).then(|| m.local_record());
        for s in seeds {
            send(
                &transport,
                *s,
                &Msg::Announce {
                    me: me.clone(),
                    want_view: true,
                },
            );
        }
    };
    let started = Instant::now();
    let mut ready = false;
    if am_seed || seeds.is_empty() {
        m.begin_sync();
        m.end_sync();
        m.ready(Ok(()));
        ready = true;
    }
    m.begin_sync();
    announce(&seeds);
    let mut syncing = true;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let mut local_rx = m.watch_local();
    local_rx.borrow_and_update();
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = m.stopping() => break,
            msg = inbox.recv() => {
                let Some((from, bytes)) = msg else { break };
                let from_seed = seeds.contains(&from);
                let answered =
                    handle(&m, &transport, &mut st, from, from_seed, &bytes, me, guest);
                if answered {
                    st.last_answer = Some(Instant::now());
                    m.set_health(Health::Healthy);
                    if syncing {
                        syncing = false;
                        m.end_sync();
                    }
                    if !ready {
                        ready = true;
                        m.ready(Ok(()));
                    }
                }
            }
            r = local_rx.changed() => {
                if r.is_err() {
                    break;
                }
                announce(&seeds);
            }
            _ = m.sync_requested() => {
                if !syncing {
                    m.begin_sync();
                    syncing = true;
                }
                announce(&seeds);
            }
            _ = tick.tick() => {
                rounds += 1;
                if rounds.is_multiple_of(10) {
                    let mut fresh = resolve(&config.seeds).await;
                    fresh.retain(|a| !mine(a));
                    seeds = fresh;
                }
                let now = Instant::now();
                st.gone.retain(|_, until| *until > now);
                let expired: Vec<NodeId> = st
                    .heard
                    .iter()
                    .filter(|(_, t)| now.duration_since(**t) > expiry)
                    .map(|(id, _)| *id)
                    .collect();
                for id in expired {
                    st.heard.remove(&id);
                    m.remove(id, LeaveReason::Expired);
                }
                if am_seed && syncing {
                    syncing = false;
                    m.end_sync();
                }
                if !seeds.is_empty() && st.last_answer.is_none_or(|t| now.duration_since(t) > expiry) {
                    m.set_health(Health::Degraded {
                        reason: format!("no seed answered for {expiry:?} ({:?})", config.seeds),
                    });
                }
                let patience = (interval * 3).max(Duration::from_secs(2));
                if !ready && now.duration_since(started) > patience {
                    m.ready(Err(DiscoveryError::Unreachable(format!(
                        "no seed of {:?} answered within {patience:?}",
                        config.seeds
                    ))));
                    return;
                }
                if !syncing {
                    m.begin_sync();
                    syncing = true;
                }
                announce(&seeds);
            }
        }
    }
    if !guest {
        // Tell everyone we know, and the seeds, that we are leaving.
        let mut to: Vec<SocketAddr> = m.known_ids().iter().map(|id| id.addr).collect();
        to.extend(seeds.iter().copied());
        to.sort();
        to.dedup();
        for a in to {
            send(&transport, a, &Msg::Leave { id: me });
        }
        // Give the messages a moment to be acknowledged before the socket closes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Applies one message; returns whether it was a seed's answer. `from_seed`: the sender is
/// one of our configured seeds, the only senders whose views we take.
#[allow(clippy::too_many_arguments)]
fn handle(
    m: &super::Membership,
    transport: &Transport,
    st: &mut State,
    from: SocketAddr,
    from_seed: bool,
    bytes: &Bytes,
    me: NodeId,
    guest: bool,
) -> bool {
    let msg: Msg = match decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(%from, error = %e, "seeds: dropped a malformed discovery message");
            return false;
        }
    };
    let now = Instant::now();
    match msg {
        Msg::Announce { me: rec, want_view } => {
            if let Some(rec) = rec
                && rec.id.addr == from
                && rec.id != me
                && !st.gone.contains_key(&rec.id)
            {
                if !plausible(&rec) {
                    tracing::debug!(%from, "seeds: refused a record that starts in the future");
                } else if st.heard.contains_key(&rec.id) || st.heard.len() < MAX_NODES {
                    st.heard.insert(rec.id, now);
                    m.upsert(rec);
                } else {
                    tracing::debug!(%from, "seeds: node table full, announcement ignored");
                }
            }
            if want_view {
                let mut nodes: Vec<(NodeRecord, u64)> = Vec::new();
                if !guest {
                    nodes.push((m.local_record(), 0));
                }
                let view = m.view();
                for (id, t) in st.heard.iter().take(MAX_NODES) {
                    if let Some(r) = view.get(id) {
                        nodes.push((r.clone(), now.duration_since(*t).as_millis() as u64));
                    }
                }
                drop(view);
                send(transport, from, &Msg::View { nodes });
            }
            false
        }
        Msg::View { nodes } => {
            if !from_seed {
                // Only a seed we were configured with speaks for the fleet: anyone else's
                // view could list fake nodes or push real ones out.
                tracing::debug!(%from, "seeds: ignored a view from a node that is not a seed");
                return false;
            }
            for (rec, age) in nodes.into_iter().take(MAX_NODES) {
                if rec.id == me || st.gone.contains_key(&rec.id) || !plausible(&rec) {
                    continue;
                }
                let at = now.checked_sub(Duration::from_millis(age)).unwrap_or(now);
                let full = st.heard.len() >= MAX_NODES;
                match st.heard.get_mut(&rec.id) {
                    Some(t) => *t = (*t).max(at),
                    None if !full => {
                        st.heard.insert(rec.id, at);
                    }
                    None => continue,
                }
                m.upsert(rec);
            }
            true
        }
        Msg::Leave { id } => {
            if id.addr == from {
                st.heard.remove(&id);
                st.gone.insert(id, now + m.settings().expiry);
                m.remove(id, LeaveReason::Graceful);
            }
            false
        }
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn seeds_messages_round_trip_and_garbage_is_refused() {
        let id = NodeId::new(
            "127.0.0.1:7000".parse().unwrap_or_else(|_| unreachable!()),
            7,
        );
        let msg = Msg::Leave { id };
        let bytes = encode(&msg).unwrap_or_default();
        assert!(bytes.starts_with(&SEEDS_HEADER));
        assert!(matches!(decode(&bytes), Ok(Msg::Leave { id: back }) if back == id));
        // Every truncation and a few kinds of garbage: an error, never a panic.
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "{n}");
        }
        assert!(matches!(
            decode(&[0x5d, 2, b'{']),
            Err(Malformed::Header(_))
        ));
        assert!(matches!(decode(&[1, 0, 0, 0]), Err(Malformed::Header(_))));
        assert!(matches!(
            decode(b"\x5d\x01not json"),
            Err(Malformed::Body(_))
        ));
    }
}
