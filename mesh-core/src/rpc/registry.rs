//! The handler registry: command id -> handler, with reserved-range and duplicate checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::error::RegisterError;
use super::meter::Served;
use super::reflect::MethodSchema;
use crate::rudp::hash::FastMap;

/// First command id reserved for the framework.
pub const RESERVED_START: u16 = 65000;

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) served: Arc<Served>,
    pub(crate) fingerprint: u32,
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) token: u64,
}

#[derive(Default)]
pub(crate) struct Registry {
    entries: FastMap<u16, Entry>,
    /// What methods say about themselves (reflection, JSON calls), beside the entries so
    /// the entry a request clones stays small.
    schemas: FastMap<u16, Arc<MethodSchema>>,
    next_token: u64,
}

impl Registry {
    pub(crate) fn get(&self, cmd: u16) -> Option<&Entry> {
        self.entries.get(&cmd)
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&u16, &Entry)> {
        self.entries.iter()
    }

    /// Adds every `(cmd, entry)` or none of them; returns the token that removes them.
    pub(crate) fn add_all(
        &mut self,
        items: Vec<(u16, Entry)>,
        mut schemas: FastMap<u16, Arc<MethodSchema>>,
        allow_reserved: bool,
    ) -> Result<u64, RegisterError> {
        let mut seen = BTreeSet::new();
        for (cmd, e) in &items {
            if *cmd >= RESERVED_START && !allow_reserved {
                return Err(RegisterError::Reserved(*cmd));
            }
            if let Some(existing) = self.entries.get(cmd) {
                return Err(RegisterError::Duplicate {
                    command: *cmd,
                    existing: describe(existing),
                });
            }
            if !seen.insert(*cmd) {
                return Err(RegisterError::Duplicate {
                    command: *cmd,
                    existing: describe(e),
                });
            }
        }
        self.next_token += 1;
        let token = self.next_token;
        for (cmd, mut e) in items {
            e.token = token;
            if let Some(schema) = schemas.remove(&cmd) {
                self.schemas.insert(cmd, schema);
            }
            self.entries.insert(cmd, e);
        }
        Ok(token)
    }

    pub(crate) fn remove_token(&mut self, token: u64) {
        self.entries.retain(|_, e| e.token != token);
        let entries = &self.entries;
        self.schemas.retain(|cmd, _| entries.contains_key(cmd));
    }

    /// What the method at `cmd` says about itself, if anything.
    pub(crate) fn schema(&self, cmd: u16) -> Option<&Arc<MethodSchema>> {
        self.schemas.get(&cmd)
    }

    /// What the node record lists: user command ids and services (name -> lowest id).
    pub(crate) fn advertised(&self) -> (BTreeSet<u16>, BTreeMap<String, u16>) {
        let mut cmds = BTreeSet::new();
        let mut services: BTreeMap<String, u16> = BTreeMap::new();
        for (cmd, e) in &self.entries {
            if *cmd >= RESERVED_START {
                continue;
            }
            cmds.insert(*cmd);
            if !e.service.is_empty() {
                let slot = services.entry(e.service.to_string()).or_insert(*cmd);
                *slot = (*slot).min(*cmd);
            }
        }
        (cmds, services)
    }
}

fn describe(e: &Entry) -> String {
    match (e.service, e.method) {
        ("", "") => "a handler".to_string(),
        ("", m) => format!("handler {m}"),
        (s, m) => format!("{s}::{m}"),
    }
}
