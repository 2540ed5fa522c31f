//! The access schema: which node types may call which services or command ranges on this
//! node (socketmesh's `_allow`, network-cluster's handler lists).
//!
//! Checked on the receiving side, before a request or one-way message runs: the caller's
//! node type is the one its record in the membership view gives for the sending address. A
//! refused request fails at the caller with [`CallError::Forbidden`](crate::CallError); a
//! refused one-way message is dropped and counted. With no rule, everything is allowed.
//!
//! Without a cluster key, the sending address is all that names the caller, so the schema
//! keeps out misconfigured and unlisted callers, not an attacker who can send from a
//! member's address.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// Caller type that matches any caller, listed in the view or not (a guest, a tool).
pub const ANY_CALLER: &str = "*";

/// One permission: callers of a node type may call a command range or a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AccessRule {
    /// The callers' node type, or [`ANY_CALLER`].
    pub caller: String,
    /// The first and last command id allowed (inclusive), if the rule names commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<[u16; 2]>,
    /// The service allowed (its `#[mesh_service]` trait name), if the rule names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl AccessRule {
    /// Callers of `caller` type may call the commands in `commands`.
    pub fn commands(caller: impl Into<String>, commands: RangeInclusive<u16>) -> AccessRule {
        AccessRule {
            caller: caller.into(),
            commands: Some([*commands.start(), *commands.end()]),
            service: None,
        }
    }

    /// Callers of `caller` type may call every method of `service`.
    pub fn service(caller: impl Into<String>, service: impl Into<String>) -> AccessRule {
        AccessRule {
            caller: caller.into(),
            commands: None,
            service: Some(service.into()),
        }
    }

    fn problem(&self) -> Option<String> {
        if self.caller.is_empty() {
            return Some("a rule has an empty `caller` (a node type, or \"*\")".into());
        }
        match (&self.commands, &self.service) {
            (Some([lo, hi]), None) if lo > hi => Some(format!(
                "the rule for {:?} has commands [{lo}, {hi}]: the first must not exceed the last",
                self.caller
            )),
            (Some(_), None) | (None, Some(_)) => None,
            _ => Some(format!(
                "the rule for {:?} must name exactly one of `commands` or `service`",
                self.caller
            )),
        }
    }

    fn allows(&self, caller: Option<&str>, command: u16, service: &str) -> bool {
        let who = self.caller == ANY_CALLER || caller == Some(self.caller.as_str());
        let what = match (&self.commands, &self.service) {
            (Some([lo, hi]), _) => (*lo..=*hi).contains(&command),
            (None, Some(s)) => s == service,
            (None, None) => false,
        };
        who && what
    }
}

/// Every rule of a node; empty means everything is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessSchema {
    rules: Vec<AccessRule>,
}

impl AccessSchema {
    /// Adds a rule.
    pub fn allow(mut self, rule: AccessRule) -> AccessSchema {
        self.rules.push(rule);
        self
    }

    /// The rules.
    pub fn rules(&self) -> &[AccessRule] {
        &self.rules
    }

    /// Whether there is no rule (everything allowed).
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// What is wrong with the rules, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        self.rules.iter().find_map(AccessRule::problem)
    }

    /// Whether a caller of type `caller` (`None`: not in the view) may run `command` of
    /// `service`.
    pub fn allows(&self, caller: Option<&str>, command: u16, service: &str) -> bool {
        self.is_open()
            || self
                .rules
                .iter()
                .any(|r| r.allows(caller, command, service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_by_type_range_and_service() {
        let open = AccessSchema::default();
        assert!(open.allows(None, 1, ""));
        let s = AccessSchema::default()
            .allow(AccessRule::commands("lobby", 1000..=1099))
            .allow(AccessRule::service("admin", "Ops"))
            .allow(AccessRule::commands(ANY_CALLER, 5..=5));
        assert!(s.allows(Some("lobby"), 1000, "Greeter"));
        assert!(s.allows(Some("lobby"), 1099, ""));
        assert!(!s.allows(Some("lobby"), 1100, ""));
        assert!(!s.allows(Some("game"), 1000, ""));
        assert!(!s.allows(None, 1000, ""));
        assert!(s.allows(Some("admin"), 2000, "Ops"));
        assert!(!s.allows(Some("lobby"), 2000, "Ops"));
        assert!(
            s.allows(None, 5, ""),
            "\"*\" matches a caller outside the view"
        );
        assert_eq!(s.problem(), None);
        let bad = AccessSchema::default().allow(AccessRule {
            caller: "x".into(),
            commands: Some([9, 3]),
            service: None,
        });
        assert!(bad.problem().is_some_and(|p| p.contains("must not exceed")));
        let toml: AccessSchema = toml::from_str::<std::collections::BTreeMap<String, AccessSchema>>(
            "access = [{ caller = \"lobby\", commands = [1, 2] }, { caller = \"a\", service = \"S\" }]",
        )
        .map(|mut m| m.remove("access").unwrap_or_default())
        .unwrap_or_default();
        assert_eq!(toml.rules().len(), 2);
        assert!(toml.allows(Some("a"), 77, "S"));
    }
}
