//! The one event stream that tools show: a [`MeshEvent`] as a short line for people and as
//! JSON, built in one place so `mesh watch` and the cluster page read the same thing.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use crate::discovery::{Health, MeshEvent};
use crate::node::NodeRecord;

/// A [`MeshEvent`] as tools show it: what kind, which node, a detail for people, and the
/// whole event as JSON (what `mesh watch --json` prints and the cluster page receives).
///
/// ```
/// use mesh_core::{MeshEvent, NodeId, NodeRecord, WatchEvent};
///
/// let id: NodeId = "127.0.0.1:7000#00000000000000aa".parse().unwrap();
/// let e = WatchEvent::from_event(&MeshEvent::Joined(NodeRecord::new(id, "game")), 1_000);
/// assert_eq!(e.kind, "joined");
/// assert_eq!(e.line(), "00:00:01.000  joined       127.0.0.1:7000#00000000000000aa  type=game\n");
/// assert_eq!(e.json["event"], "joined");
/// assert_eq!(e.json["at_ms"], 1_000);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WatchEvent {
    /// `joined`, `left`, `updated`, `restarted`, `unreachable`, `reachable` or `health`.
    pub kind: String,
    /// The node's id (`ADDR#INCARNATION`), or for `health` the health word (`healthy`,
    /// `degraded`).
    pub node: String,
    /// What changed, for people: the type, role and services of a joiner, why a node left,
    /// the fields an update changed, the reason discovery is degraded.
    pub detail: String,
    /// When the event was seen, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The event as JSON: `{"event": kind, "node": record, ..., "at_ms": ms}`; node records
    /// as [`record_json`] writes them.
    pub json: Json,
}

/// A node record as tools show it in JSON: id, address, incarnation (16 hex digits), type,
/// role, status, services, values, start time and age at `now_ms`.
pub fn record_json(r: &NodeRecord, now_ms: u64) -> Json {
    json!({
        "id": r.id.to_string(),
        "address": r.id.addr.to_string(),
        "incarnation": format!("{:016x}", r.id.incarnation),
        "type": r.node_type,
        "role": r.role,
        "status": r.status.to_string(),
        "services": r.services,
        "values": r.values,
        "started_at_ms": r.started_at_ms,
        "age_ms": now_ms.saturating_sub(r.started_at_ms),
    })
}

/// A JSON value compactly, strings without their quotes.
fn plain(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `type=T role=R services=A,B` of a record (role and services only when present).
fn brief(r: &NodeRecord) -> String {
    let services: Vec<&str> = r.services.keys().map(String::as_str).collect();
    let mut s = format!("type={}", r.node_type);
    if !r.role.is_empty() {
        s.push_str(&format!(" role={}", r.role));
    }
    if !services.is_empty() {
        s.push_str(&format!(" services={}", services.join(",")));
    }
    s
}

/// What an update changed: status, role, services, then each value set or removed.
fn changes(old: &NodeRecord, new: &NodeRecord) -> String {
    let mut what = Vec::new();
    if old.status != new.status {
        what.push(format!("status {} -> {}", old.status, new.status));
    }
    if old.role != new.role {
        what.push(format!("role {:?} -> {:?}", old.role, new.role));
    }
    if old.services != new.services {
        let s: Vec<&str> = new.services.keys().map(String::as_str).collect();
        what.push(format!("services {}", s.join(",")));
    }
    let mut changed: BTreeMap<&str, Option<&Json>> = BTreeMap::new();
    for (k, v) in &new.values {
        if old.values.get(k) != Some(v) {
            changed.insert(k, Some(v));
        }
    }
    for k in old.values.keys().filter(|k| !new.values.contains_key(*k)) {
        changed.insert(k, None);
    }
    for (k, v) in &changed {
        what.push(match v {
            Some(v) => format!("{k}={}", plain(v)),
            None => format!("{k} removed"),
        });
    }
    what.join(", ")
}

/// `HH:MM:SS.mmm` (UTC) of a time in milliseconds since the Unix epoch.
pub fn clock(ms: u64) -> String {
    let day = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3_600_000,
        (day / 60_000) % 60,
        (day / 1000) % 60,
        day % 1000
    )
}

impl WatchEvent {
    /// The event `e`, seen at `now_ms` (milliseconds since the Unix epoch; node ages are
    /// taken at that time).
    pub fn from_event(e: &MeshEvent, now_ms: u64) -> WatchEvent {
        let (kind, node, detail, mut json) = match e {
            MeshEvent::Joined(r) => (
                "joined",
                r.id.to_string(),
                brief(r),
                json!({ "event": "joined", "node": record_json(r, now_ms) }),
            ),
            MeshEvent::Left { node, reason } => (
                "left",
                node.id.to_string(),
                reason.to_string(),
                json!({ "event": "left", "node": record_json(node, now_ms), "reason": reason.to_string() }),
            ),
            MeshEvent::Updated { old, new } => (
                "updated",
                new.id.to_string(),
                changes(old, new),
                json!({ "event": "updated", "old": record_json(old, now_ms), "node": record_json(new, now_ms) }),
            ),
            MeshEvent::Restarted { old, new } => (
                "restarted",
                new.id.to_string(),
                format!("was {:016x}", old.id.incarnation),
                json!({ "event": "restarted", "old": record_json(old, now_ms), "node": record_json(new, now_ms) }),
            ),
            MeshEvent::Unreachable(id) => (
                "unreachable",
                id.to_string(),
                String::new(),
                json!({ "event": "unreachable", "id": id.to_string() }),
            ),
            MeshEvent::Reachable(id) => (
                "reachable",
                id.to_string(),
                String::new(),
                json!({ "event": "reachable", "id": id.to_string() }),
            ),
            MeshEvent::Health(h) => {
                let (word, detail) = health(h);
                (
                    "health",
                    word.to_string(),
                    detail.clone(),
                    json!({ "event": "health", "health": word, "reason": detail }),
                )
            }
        };
        if let Some(o) = json.as_object_mut() {
            o.insert("at_ms".into(), json!(now_ms));
        }
        WatchEvent {
            kind: kind.to_string(),
            node,
            detail,
            at_ms: now_ms,
            json,
        }
    }

    /// The line `mesh watch` prints: `HH:MM:SS.mmm  kind  node  detail` and a line break,
    /// the kind padded to 11 columns.
    pub fn line(&self) -> String {
        self.line_with(|kind| kind.to_string())
    }

    /// [`line`](Self::line) with the padded kind passed through `paint` (a terminal's
    /// colours, say).
    pub fn line_with(&self, paint: impl FnOnce(&str) -> String) -> String {
        let shown = paint(&format!("{:<11}", self.kind));
        format!(
            "{}  {shown}  {}  {}\n",
            clock(self.at_ms),
            self.node,
            self.detail
        )
        .replace("  \n", "\n")
    }
}

/// A health as a word and its reason (empty when healthy).
pub(crate) fn health(h: &Health) -> (&'static str, String) {
    match h {
        Health::Healthy => ("healthy", String::new()),
        Health::Degraded { reason } => ("degraded", reason.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::discovery::LeaveReason;
    use crate::node::{NodeId, NodeStatus};

    fn rec(t: &str) -> NodeRecord {
        let id: NodeId = "127.0.0.1:7000#00000000000000aa".parse().unwrap();
        let mut r = NodeRecord::new(id, t);
        r.started_at_ms = 500;
        r
    }

    #[test]
    fn lines_and_json_of_each_kind() {
        let mut a = rec("game");
        a.role = "lobby".into();
        a.services.insert("Calc".into(), 1000);
        let e = WatchEvent::from_event(&MeshEvent::Joined(a.clone()), 3_723_004);
        assert_eq!(
            e.line(),
            "01:02:03.004  joined       127.0.0.1:7000#00000000000000aa  type=game role=lobby services=Calc\n"
        );
        assert_eq!(e.json["node"]["age_ms"], 3_722_504);
        assert_eq!(e.json["node"]["incarnation"], "00000000000000aa");
        let mut b = a.clone();
        b.status = NodeStatus::Taken;
        b.values.insert("load".into(), json!(3));
        b.values.insert("zone".into(), json!("eu"));
        a.values.insert("zone".into(), json!("us"));
        a.values.insert("gone".into(), json!(true));
        let e = WatchEvent::from_event(
            &MeshEvent::Updated {
                old: a.clone(),
                new: b,
            },
            0,
        );
        assert_eq!(
            e.detail,
            "status online -> taken, gone removed, load=3, zone=eu"
        );
        let e = WatchEvent::from_event(
            &MeshEvent::Left {
                node: a.clone(),
                reason: LeaveReason::Expired,
            },
            0,
        );
        assert_eq!(e.detail, "heartbeats expired");
        assert_eq!(e.json["reason"], "heartbeats expired");
        let e = WatchEvent::from_event(&MeshEvent::Unreachable(a.id), 0);
        assert_eq!(
            e.line(),
            "00:00:00.000  unreachable  127.0.0.1:7000#00000000000000aa\n"
        );
        let e = WatchEvent::from_event(
            &MeshEvent::Health(Health::Degraded {
                reason: "redis down".into(),
            }),
            0,
        );
        assert_eq!((e.kind.as_str(), e.node.as_str()), ("health", "degraded"));
        assert_eq!(
            e.json.to_string(),
            r#"{"at_ms":0,"event":"health","health":"degraded","reason":"redis down"}"#
        );
        assert_eq!(
            e.line_with(|k| format!("<{k}>")),
            "00:00:00.000  <health     >  degraded  redis down\n"
        );
    }
}
