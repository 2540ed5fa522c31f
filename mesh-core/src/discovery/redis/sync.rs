//! The client side of the change protocol, sans-IO: applies script replies and pub/sub
//! notifications to the membership view, in sequence, and decides when a catch-up is needed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::RedisStats;
use super::script::{Changes, LogEntry, Reply};
use super::seal::RecordSeal;
use crate::discovery::{LeaveReason, Membership};
use crate::node::{NodeId, NodeRecord};

/// Garbled ids remembered so each is logged at `warn` once (bounded).
const LOGGED_GARBLED: usize = 1024;

/// What a notification asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notified {
    /// Applied, or already known.
    Done,
    /// A notification was missed (or the epoch changed): read from Redis now.
    CatchUp,
}

/// Where this node is in the change sequence.
#[derive(Debug)]
pub(super) struct SyncState {
    /// Epoch of the last reply; `None` before the first.
    epoch: Option<String>,
    /// The last change applied.
    seq: u64,
    /// Its tag (empty if unknown).
    tag: String,
    /// A reconnect happened since the last reply: the server may be another one (a promoted
    /// replica that lost changes, or a restarted one), so the next read checks the last
    /// change's tag, and notifications wait for that read.
    reconnected: bool,
    /// A full snapshot has been applied once.
    synced_once: bool,
    /// Nodes missing from a snapshot taken after an outage or data loss: they leave only if
    /// still missing at the deadline (they re-register within it if alive).
    pending: HashMap<NodeId, Instant>,
    grace: Duration,
    stats: RedisStats,
    logged: HashSet<String>,
    /// Seals our record and checks the others' (with a cluster key).
    seal: RecordSeal,
}

impl SyncState {
    pub(super) fn new(grace: Duration, stats: RedisStats, seal: RecordSeal) -> SyncState {
        SyncState {
            epoch: None,
            seq: 0,
            tag: String::new(),
            reconnected: false,
            synced_once: false,
            pending: HashMap::new(),
            grace,
            stats,
            logged: HashSet::new(),
            seal,
        }
    }

    /// Our record as stored (sealed with a cluster key).
    pub(super) fn seal(&self, json: String) -> String {
        self.seal.seal(json)
    }

    /// The epoch to send (empty asks for a full snapshot: also after a reconnect when the
    /// last change cannot be checked).
    pub(super) fn epoch(&self) -> &str {
        if self.reconnected && self.seq > 0 && self.tag.is_empty() {
            return "";
        }
        self.epoch.as_deref().unwrap_or("")
    }

    /// The tag of the last change, for the server to check after a reconnect; empty
    /// otherwise.
    pub(super) fn verify_tag(&self) -> &str {
        if self.reconnected { &self.tag } else { "" }
    }

    /// The last change applied.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// The connection was lost. The next read continues from the log if the server still
    /// has this node's last change; otherwise it is a full snapshot whose missing nodes get
    /// the grace period (the server may be a promoted replica or a restarted, empty one).
    pub(super) fn reconnecting(&mut self) {
        self.reconnected = true;
    }

    /// Applies a script reply.
    pub(super) fn apply_reply(&mut self, m: &Membership, reply: Reply, now: Instant) {
        let epoch_changed = self.epoch.as_deref() != Some(reply.epoch.as_str());
        match reply.changes {
            Changes::None => {}
            Changes::Log(entries) => {
                for e in entries {
                    if e.seq == self.seq + 1 {
                        self.apply_entry(m, &e);
                        self.seq = e.seq;
                        self.tag = e.tag;
                    } else if e.seq > self.seq + 1 {
                        // Cannot happen (the script sends a contiguous run): resync next time.
                        tracing::warn!(
                            seq = e.seq,
                            last = self.seq,
                            "redis: change log out of sequence"
                        );
                        self.epoch = None;
                        self.tag.clear();
                        return;
                    }
                }
            }
            Changes::Full(records) => {
                self.stats.full_sync();
                let lenient = self.synced_once && (epoch_changed || self.reconnected);
                self.apply_snapshot(m, records, lenient, now);
                self.synced_once = true;
                self.tag = reply.tag;
            }
        }
        if epoch_changed && self.epoch.is_some() {
            tracing::info!(epoch = %reply.epoch, "redis: new epoch (Redis lost its data)");
        }
        self.epoch = Some(reply.epoch);
        self.seq = reply.seq;
        self.reconnected = false;
        self.expire_pending(m, now);
    }

    /// Applies a pub/sub notification if it is the next change.
    pub(super) fn on_message(&mut self, m: &Membership, payload: &[u8]) -> Notified {
        let Some((epoch, entry)) = LogEntry::parse_message(payload) else {
            self.stats.garbled();
            tracing::warn!(
                len = payload.len(),
                "redis: garbled change notification skipped"
            );
            return Notified::Done;
        };
        let Some(mine) = self.epoch.as_deref() else {
            // Not synced yet: the coming read covers it.
            return Notified::Done;
        };
        if self.reconnected {
            // Until the server is known to continue this node's sequence.
            return Notified::Done;
        }
        if epoch != mine {
            return Notified::CatchUp;
        }
        if entry.seq <= self.seq {
            return Notified::Done;
        }
        if entry.seq > self.seq + 1 {
            self.stats.lost_message();
            return Notified::CatchUp;
        }
        self.apply_entry(m, &entry);
        self.seq = entry.seq;
        self.tag = entry.tag;
        Notified::Done
    }

    fn apply_entry(&mut self, m: &Membership, e: &LogEntry) {
        match e.op.as_str() {
            "join" | "update" => {
                if let Some(r) = self.parse(&e.id, &e.rec) {
                    self.pending.remove(&r.id);
                    m.upsert(r);
                }
            }
            "leave" | "expire" => match e.id.parse::<NodeId>() {
                Ok(id) => {
                    self.pending.remove(&id);
                    let reason = if e.op == "leave" {
                        LeaveReason::Graceful
                    } else {
                        LeaveReason::Expired
                    };
                    m.remove(id, reason);
                }
                Err(_) => self.garbled(&e.id, "not a node id"),
            },
            other => {
                let what = format!("unknown change {other:?}");
                self.garbled(&e.id, &what);
            }
        }
    }

    /// A snapshot: upsert what is there; what is missing leaves at once, or after the grace
    /// when `lenient`. Garbled entries keep their node (if known) in the view.
    fn apply_snapshot(
        &mut self,
        m: &Membership,
        records: Vec<(String, String)>,
        lenient: bool,
        now: Instant,
    ) {
        let mut present: HashSet<NodeId> = HashSet::with_capacity(records.len());
        for (id, rec) in records {
            match self.parse(&id, &rec) {
                Some(r) => {
                    present.insert(r.id);
                    self.pending.remove(&r.id);
                    m.upsert(r);
                }
                None => {
                    if let Ok(id) = id.parse::<NodeId>() {
                        present.insert(id);
                    }
                }
            }
        }
        for id in m.known_ids() {
            if present.contains(&id) {
                continue;
            }
            if lenient {
                self.pending.entry(id).or_insert(now + self.grace);
            } else if !self.pending.contains_key(&id) {
                m.remove(id, LeaveReason::Expired);
            }
        }
    }

    /// Removes the nodes still missing at their deadline.
    fn expire_pending(&mut self, m: &Membership, now: Instant) {
        let due: Vec<NodeId> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.pending.remove(&id);
            tracing::info!(node = %id, "redis: node did not re-register after the outage");
            m.remove(id, LeaveReason::Expired);
        }
    }

    fn parse(&mut self, id: &str, rec: &str) -> Option<NodeRecord> {
        let rec = match self.seal.open(rec) {
            Ok(json) => json,
            Err(why) => {
                self.stats.forged();
                self.refused(id, why.describe());
                return None;
            }
        };
        match serde_json::from_str::<NodeRecord>(rec) {
            Ok(r) if r.id.to_string() == id => Some(r),
            Ok(r) => {
                let what = format!("record of {} under another id", r.id);
                self.garbled(id, &what);
                None
            }
            Err(e) => {
                self.garbled(id, &e.to_string());
                None
            }
        }
    }

    fn garbled(&mut self, id: &str, error: &str) {
        self.stats.garbled();
        self.refused(id, error);
    }

    /// Logs a skipped record: a warning the first time for each of the first ids.
    fn refused(&mut self, id: &str, error: &str) {
        let id: String = id.chars().take(80).collect();
        if self.logged.len() < LOGGED_GARBLED && self.logged.insert(id.clone()) {
            tracing::warn!(id = %id, error, "redis: node record skipped");
        } else {
            tracing::debug!(id = %id, error, "redis: node record skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::discovery::MembershipSettings;

    fn rec(port: u16) -> NodeRecord {
        NodeRecord::new(
            NodeId::new(SocketAddr::from(([127, 0, 0, 1], port)), u64::from(port)),
            "t",
        )
    }

    fn json(r: &NodeRecord) -> String {
        serde_json::to_string(r).unwrap_or_default()
    }

    fn membership() -> Membership {
        Membership::new(
            rec(1),
            MembershipSettings::default(),
            CancellationToken::new(),
        )
        .0
    }

    fn reply(epoch: &str, seq: u64, changes: Changes) -> Reply {
        Reply {
            epoch: epoch.into(),
            seq,
            lease_held: false,
            next_reap_ms: None,
            changes,
            tag: format!("t{seq}"),
        }
    }

    fn msg(epoch: &str, seq: u64, op: &str, r: &NodeRecord) -> Vec<u8> {
        format!("{epoch}\n{seq}\nt{seq}\n{op}\n{}\n{}", r.id, json(r)).into_bytes()
    }

    #[test]
    fn snapshot_then_notifications_in_sequence() {
        let m = membership();
        let stats = RedisStats::new();
        let mut s = SyncState::new(Duration::from_secs(1), stats.clone(), RecordSeal::none());
        let now = Instant::now();
        let (a, b) = (rec(2), rec(3));
        let full = Changes::Full(vec![
            (a.id.to_string(), json(&a)),
            ("junk".into(), "{not json".into()),
        ]);
        s.apply_reply(&m, reply("e", 5, full), now);
        assert_eq!(m.known_ids(), vec![a.id]);
        assert_eq!(stats.garbled_records(), 1);
        assert_eq!(s.on_message(&m, &msg("e", 5, "join", &b)), Notified::Done);
        assert_eq!(m.known_ids().len(), 1, "an old change is ignored");
        assert_eq!(s.on_message(&m, &msg("e", 6, "join", &b)), Notified::Done);
        assert_eq!(m.known_ids().len(), 2);
        assert_eq!(
            s.on_message(&m, &msg("e", 8, "leave", &b)),
            Notified::CatchUp
        );
        assert_eq!(
            s.on_message(&m, &msg("x", 7, "leave", &b)),
            Notified::CatchUp
        );
        assert_eq!(s.on_message(&m, &msg("e", 7, "leave", &b)), Notified::Done);
        assert_eq!(m.known_ids(), vec![a.id]);
        let log = Changes::Log(vec![LogEntry {
            seq: 8,
            tag: "t8".into(),
            op: "expire".into(),
            id: a.id.to_string(),
            rec: String::new(),
        }]);
        s.apply_reply(&m, reply("e", 8, log), now);
        assert!(m.known_ids().is_empty());
        assert_eq!(s.seq(), 8);
    }

    #[test]
    fn after_data_loss_missing_nodes_get_a_grace() {
        let m = membership();
        let mut s = SyncState::new(
            Duration::from_secs(1),
            RedisStats::new(),
            RecordSeal::none(),
        );
        let t0 = Instant::now();
        let (a, b) = (rec(2), rec(3));
        let both = vec![(a.id.to_string(), json(&a)), (b.id.to_string(), json(&b))];
        s.apply_reply(&m, reply("e1", 2, Changes::Full(both)), t0);
        assert_eq!(m.known_ids().len(), 2);
        // Redis came back empty: only a re-registered so far.
        s.reconnecting();
        let only_a = Changes::Full(vec![(a.id.to_string(), json(&a))]);
        s.apply_reply(&m, reply("e2", 1, only_a), t0);
        assert_eq!(m.known_ids().len(), 2, "b is kept during the grace");
        // b re-registers: no longer pending.
        assert_eq!(s.on_message(&m, &msg("e2", 2, "join", &b)), Notified::Done);
        s.apply_reply(
            &m,
            reply("e2", 2, Changes::None),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(m.known_ids().len(), 2);
        // Another loss; this time b never comes back.
        s.reconnecting();
        let only_a = Changes::Full(vec![(a.id.to_string(), json(&a))]);
        s.apply_reply(&m, reply("e3", 1, only_a), t0);
        assert_eq!(m.known_ids().len(), 2);
        s.apply_reply(
            &m,
            reply("e3", 1, Changes::None),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(m.known_ids(), vec![a.id]);
    }

    #[test]
    fn a_trimmed_log_resync_removes_at_once() {
        let m = membership();
        let mut s = SyncState::new(
            Duration::from_secs(1),
            RedisStats::new(),
            RecordSeal::none(),
        );
        let t0 = Instant::now();
        let (a, b) = (rec(2), rec(3));
        let both = vec![(a.id.to_string(), json(&a)), (b.id.to_string(), json(&b))];
        s.apply_reply(&m, reply("e", 2, Changes::Full(both)), t0);
        let only_a = Changes::Full(vec![(a.id.to_string(), json(&a))]);
        s.apply_reply(&m, reply("e", 9000, only_a), t0);
        assert_eq!(m.known_ids(), vec![a.id]);
    }

    #[test]
    fn garbled_changes_are_skipped() {
        let m = membership();
        let stats = RedisStats::new();
        let mut s = SyncState::new(Duration::from_secs(1), stats.clone(), RecordSeal::none());
        let t0 = Instant::now();
        s.apply_reply(&m, reply("e", 0, Changes::Full(vec![])), t0);
        let a = rec(2);
        let wrong_id = format!("e\n1\nt\njoin\n127.0.0.1:9#09\n{}", json(&a));
        assert_eq!(s.on_message(&m, wrong_id.as_bytes()), Notified::Done);
        assert_eq!(
            s.on_message(&m, b"e\n2\nt\nexpire\nnot-an-id\n"),
            Notified::Done
        );
        assert_eq!(s.on_message(&m, b"e\n3\nt\nbogus\nx\n"), Notified::Done);
        assert_eq!(s.on_message(&m, b"garbage"), Notified::Done);
        assert_eq!(s.on_message(&m, &msg("e", 4, "join", &a)), Notified::Done);
        assert_eq!(m.known_ids(), vec![a.id]);
        assert_eq!(stats.garbled_records(), 4);
    }

    #[test]
    fn a_reconnect_continues_from_the_log_when_the_server_has_the_last_change() {
        let m = membership();
        let mut s = SyncState::new(
            Duration::from_secs(1),
            RedisStats::new(),
            RecordSeal::none(),
        );
        let t0 = Instant::now();
        let (a, b) = (rec(2), rec(3));
        let both = vec![(a.id.to_string(), json(&a)), (b.id.to_string(), json(&b))];
        s.apply_reply(&m, reply("e", 4, Changes::Full(both)), t0);
        assert_eq!((s.epoch(), s.verify_tag()), ("e", ""));
        s.reconnecting();
        assert_eq!((s.epoch(), s.verify_tag()), ("e", "t4"));
        // Notifications wait for the checked read.
        assert_eq!(s.on_message(&m, &msg("e", 5, "leave", &b)), Notified::Done);
        assert_eq!(m.known_ids().len(), 2);
        // The server had our change 4: b's expiry during the outage comes from the log, at
        // once and with its reason.
        let log = Changes::Log(vec![LogEntry {
            seq: 5,
            tag: "t5".into(),
            op: "expire".into(),
            id: b.id.to_string(),
            rec: String::new(),
        }]);
        s.apply_reply(&m, reply("e", 5, log), t0);
        assert_eq!(m.known_ids(), vec![a.id]);
        assert_eq!(s.verify_tag(), "");
        // Without a known tag a reconnect asks for a full snapshot.
        s.tag.clear();
        s.reconnecting();
        assert_eq!(s.epoch(), "");
    }
}
