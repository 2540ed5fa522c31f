//! Node records in Redis under the cluster key: with a key, each record is stored as
//! `m1.<MAC, 32 hex digits>.<record JSON>`, the MAC (BLAKE2s under a key derived from the
//! cluster key) taken over the namespace and the JSON. A record without it, or whose MAC
//! does not verify under an installed key, is refused and counted: whoever can write to
//! the Redis cannot list a node, nor alter a real node's record (its type, its services).
//!
//! Without a key records are stored as plain JSON, and sealed records are read without
//! checking their MAC (the node cannot check it; it cannot talk to keyed nodes either).

use crate::transport::Transport;

/// The marker of a sealed record.
const MARK: &str = "m1.";
/// Hex digits of the MAC.
const MAC_HEX: usize = 32;

/// Why a stored record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Sealed records are required (we hold a key) and this one has no MAC.
    Unsealed,
    /// The MAC does not verify under any installed key: forged or altered.
    BadMac,
    /// The seal is malformed.
    Malformed,
}

impl Refused {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Refused::Unsealed => "a record without the cluster key's MAC",
            Refused::BadMac => "a record whose MAC does not verify (forged or altered)",
            Refused::Malformed => "a record with a malformed MAC",
        }
    }
}

/// Seals and opens records with the node's keyring (through its transport, so a key
/// rotation applies at once).
#[derive(Clone)]
pub(super) struct RecordSeal {
    transport: Option<Transport>,
    namespace: String,
}

impl std::fmt::Debug for RecordSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSeal")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RecordSeal {
    pub(super) fn new(transport: Transport, namespace: &str) -> Self {
        RecordSeal {
            transport: Some(transport),
            namespace: namespace.to_string(),
        }
    }

    /// Records are neither sealed nor checked (unit tests of the sync logic).
    #[cfg(test)]
    pub(super) fn none() -> Self {
        RecordSeal {
            transport: None,
            namespace: String::new(),
        }
    }

    fn input(&self, json: &str) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.namespace.len() + 1 + json.len());
        v.extend_from_slice(self.namespace.as_bytes());
        v.push(0);
        v.extend_from_slice(json.as_bytes());
        v
    }

    /// The record to store for `json`.
    pub(super) fn seal(&self, json: String) -> String {
        let Some(mac) = self
            .transport
            .as_ref()
            .and_then(|t| t.record_mac(&self.input(&json)))
        else {
            return json;
        };
        format!("{MARK}{}.{json}", crate::rudp::hex(&mac))
    }

    /// The JSON of a stored record, if it may be believed.
    pub(super) fn open<'a>(&self, stored: &'a str) -> Result<&'a str, Refused> {
        let sealed = stored.strip_prefix(MARK);
        let Some(t) = &self.transport else {
            return Ok(sealed.map_or(stored, |s| s.get(MAC_HEX + 1..).unwrap_or(s)));
        };
        let Some(rest) = sealed else {
            return if !t.has_keyring() {
                Ok(stored)
            } else {
                Err(Refused::Unsealed)
            };
        };
        let (Some(hex), Some('.'), Some(json)) = (
            rest.get(..MAC_HEX),
            rest.get(MAC_HEX..).and_then(|s| s.chars().next()),
            rest.get(MAC_HEX + 1..),
        ) else {
            return Err(Refused::Malformed);
        };
        let mut mac = [0u8; MAC_HEX / 2];
        if !crate::rudp::unhex(hex, &mut mac) {
            return Err(Refused::Malformed);
        }
        match t.check_record_mac(&self.input(json), &mac) {
            None | Some(true) => Ok(json),
            Some(false) => Err(Refused::BadMac),
        }
    }
}
