//! The wire-compatibility lock: each method's id and signature and each shared-object
//! field's id, as the nodes already running use them. A change that would break those nodes
//! fails the build; a compatible one updates the lock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// The lock file's format version.
pub const LOCK_FORMAT: u32 = 1;

/// The contents of a lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lock {
    /// [`LOCK_FORMAT`].
    pub format: u32,
    /// Service name -> command id -> method.
    pub services: BTreeMap<String, BTreeMap<u16, LockedMethod>>,
    /// Shared-object type name -> field id -> field.
    pub shared_objects: BTreeMap<String, BTreeMap<u16, LockedField>>,
}

/// A method as nodes use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedMethod {
    /// Its name.
    pub name: String,
    /// `request`, `oneway` or `unreliable`.
    pub kind: String,
    /// `Service::method(A,B)->R`.
    pub signature: String,
    /// Its fingerprint.
    pub fingerprint: u32,
}

/// A shared-object field as nodes use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedField {
    /// Its name.
    pub name: String,
    /// `counter`, `value` or `map`.
    pub kind: String,
    /// Its type as written.
    #[serde(rename = "type")]
    pub ty: String,
}

impl Lock {
    /// The lock a manifest implies.
    pub fn of(m: &Manifest) -> Lock {
        let mut lock = Lock {
            format: LOCK_FORMAT,
            ..Lock::default()
        };
        for s in &m.services {
            let methods = lock.services.entry(s.name.clone()).or_default();
            for x in &s.methods {
                methods.insert(
                    x.id,
                    LockedMethod {
                        name: x.name.clone(),
                        kind: x.kind.clone(),
                        signature: x.signature.clone(),
                        fingerprint: x.fingerprint,
                    },
                );
            }
        }
        for o in &m.shared_objects {
            let fields = lock.shared_objects.entry(o.name.clone()).or_default();
            for f in &o.fields {
                fields.insert(
                    f.id,
                    LockedField {
                        name: f.name.clone(),
                        kind: f.kind.clone(),
                        ty: f.ty.clone(),
                    },
                );
            }
        }
        lock
    }

    /// The file's text (stable: sorted keys, one entry per line group, a final newline).
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// One difference between the lock and the sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Whether nodes running the locked version would break.
    pub breaking: bool,
    /// What `MESH_BUILD_ACCEPT` names to accept it: `Service::method`, `Service`,
    /// `Object.field` or `Object`.
    pub key: String,
    /// What changed, in words.
    pub text: String,
}

impl Change {
    fn breaking(key: String, text: String) -> Change {
        Change {
            breaking: true,
            key,
            text,
        }
    }
    fn compatible(key: String, text: String) -> Change {
        Change {
            breaking: false,
            key,
            text,
        }
    }

    /// Whether `accept` (the `MESH_BUILD_ACCEPT` list) accepts it.
    pub fn accepted_by(&self, accept: &[String]) -> bool {
        let owner = self
            .key
            .split("::")
            .next()
            .and_then(|s| s.split('.').next())
            .unwrap_or("");
        accept
            .iter()
            .any(|a| a == "all" || *a == self.key || a == owner)
    }
}

/// Every difference from `old` (the lock) to `new` (the sources), breaking ones first.
pub fn diff(old: &Lock, new: &Lock) -> Vec<Change> {
    let mut out = Vec::new();
    for (service, methods) in &old.services {
        let Some(now) = new.services.get(service) else {
            let ids: Vec<u16> = methods.keys().copied().collect();
            out.push(Change::breaking(
                service.clone(),
                format!(
                    "service `{service}` was removed (it had ids {})",
                    crate::collide::ranges(&ids)
                ),
            ));
            continue;
        };
        for (id, m) in methods {
            let key = format!("{service}::{}", m.name);
            match now.get(id) {
                Some(n) if n == m => {}
                Some(n) => {
                    let mut what = Vec::new();
                    if n.name != m.name {
                        what.push(format!("renamed to `{}`", n.name));
                    }
                    if n.signature != m.signature {
                        what.push(format!("signature `{}` is now `{}`", m.signature, n.signature));
                    }
                    if n.kind != m.kind {
                        what.push(format!("delivery `{}` is now `{}`", m.kind, n.kind));
                    }
                    out.push(Change::breaking(
                        key,
                        format!("id {id} (`{service}::{}`): {}", m.name, what.join("; ")),
                    ));
                }
                None => match now.iter().find(|(_, n)| n.name == m.name) {
                    Some((new_id, _)) => out.push(Change::breaking(
                        key,
                        format!(
                            "`{service}::{}` moved from id {id} to id {new_id}: nodes of the locked \
                             version still call {id}",
                            m.name
                        ),
                    )),
                    None => out.push(Change::breaking(
                        key,
                        format!("`{service}::{}` (id {id}) was removed", m.name),
                    )),
                },
            }
        }
        for (id, n) in now {
            if !methods.contains_key(id) && !methods.values().any(|m| m.name == n.name) {
                out.push(Change::compatible(
                    format!("{service}::{}", n.name),
                    format!("added `{service}::{}` at id {id}", n.name),
                ));
            }
        }
    }
    for service in new.services.keys() {
        if !old.services.contains_key(service) {
            out.push(Change::compatible(
                service.clone(),
                format!("added service `{service}`"),
            ));
        }
    }
    for (object, fields) in &old.shared_objects {
        let Some(now) = new.shared_objects.get(object) else {
            out.push(Change::breaking(
                object.clone(),
                format!("shared object `{object}` was removed"),
            ));
            continue;
        };
        for (id, f) in fields {
            let key = format!("{object}.{}", f.name);
            match now.get(id) {
                Some(n) if n == f => {}
                Some(n) => out.push(Change::breaking(
                    key,
                    format!(
                        "field id {id} of `{object}` was `{}: {}` ({}), now `{}: {}` ({})",
                        f.name, f.ty, f.kind, n.name, n.ty, n.kind
                    ),
                )),
                None => match now.iter().find(|(_, n)| n.name == f.name) {
                    Some((new_id, _)) => out.push(Change::breaking(
                        key,
                        format!(
                            "field `{object}.{}` was renumbered from id {id} to id {new_id}",
                            f.name
                        ),
                    )),
                    None => out.push(Change::breaking(
                        key,
                        format!("field `{object}.{}` (id {id}) was removed", f.name),
                    )),
                },
            }
        }
        for (id, n) in now {
            if !fields.contains_key(id) && !fields.values().any(|f| f.name == n.name) {
                out.push(Change::compatible(
                    format!("{object}.{}", n.name),
                    format!("added field `{object}.{}` at id {id}", n.name),
                ));
            }
        }
    }
    for object in new.shared_objects.keys() {
        if !old.shared_objects.contains_key(object) {
            out.push(Change::compatible(
                object.clone(),
                format!("added shared object `{object}`"),
            ));
        }
    }
    out.sort_by_key(|c| !c.breaking);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(name: &str, sig: &str) -> LockedMethod {
        LockedMethod {
            name: name.into(),
            kind: "request".into(),
            signature: sig.into(),
            fingerprint: mesh_syntax::fingerprint(sig),
        }
    }

    fn lock(methods: &[(u16, &str, &str)]) -> Lock {
        let mut l = Lock {
            format: LOCK_FORMAT,
            ..Lock::default()
        };
        let s = l.services.entry("Greeter".into()).or_default();
        for (id, name, sig) in methods {
            s.insert(*id, method(name, sig));
        }
        l
    }

    #[test]
    fn identical_is_no_change() {
        let a = lock(&[(1000, "hello", "Greeter::hello(String)->String")]);
        assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn a_new_method_at_a_new_id_is_compatible() {
        let a = lock(&[(1000, "hello", "Greeter::hello(String)->String")]);
        let b = lock(&[
            (1000, "hello", "Greeter::hello(String)->String"),
            (1001, "bye", "Greeter::bye()->()"),
        ]);
        let d = diff(&a, &b);
        assert_eq!(d.len(), 1);
        assert!(!d[0].breaking);
        assert_eq!(d[0].key, "Greeter::bye");
        // The reverse is a removal.
        let d = diff(&b, &a);
        assert!(
            d[0].breaking && d[0].text.contains("(id 1001) was removed"),
            "{d:?}"
        );
    }

    #[test]
    fn changed_types_renames_and_moves_break() {
        let a = lock(&[(1000, "hello", "Greeter::hello(String)->String")]);
        let typed = lock(&[(1000, "hello", "Greeter::hello(u32)->String")]);
        let d = diff(&a, &typed);
        assert!(d[0].breaking && d[0].text.contains("is now `Greeter::hello(u32)->String`"));
        let moved = lock(&[(1005, "hello", "Greeter::hello(String)->String")]);
        let d = diff(&a, &moved);
        assert_eq!(d.len(), 1, "a move is one change: {d:?}");
        assert!(d[0].text.contains("moved from id 1000 to id 1005"));
        assert!(d[0].accepted_by(&["Greeter::hello".into()]));
        assert!(d[0].accepted_by(&["Greeter".into()]));
        assert!(d[0].accepted_by(&["all".into()]));
        assert!(!d[0].accepted_by(&["Greeter::bye".into()]));
    }

    #[test]
    fn shared_fields_renumbered_or_retyped_break() {
        let field = |name: &str, ty: &str| LockedField {
            name: name.into(),
            kind: "value".into(),
            ty: ty.into(),
        };
        let mut a = Lock::default();
        a.shared_objects
            .entry("Room".into())
            .or_default()
            .insert(0, field("title", "String"));
        let mut b = Lock::default();
        b.shared_objects
            .entry("Room".into())
            .or_default()
            .insert(1, field("title", "String"));
        let d = diff(&a, &b);
        assert!(
            d[0].breaking && d[0].text.contains("renumbered from id 0 to id 1"),
            "{d:?}"
        );
        assert!(d[0].accepted_by(&["Room".into()]));
        let mut c = Lock::default();
        c.shared_objects
            .entry("Room".into())
            .or_default()
            .insert(0, field("title", "u64"));
        assert!(
            diff(&a, &c)[0]
                .text
                .contains("was `title: String` (value), now `title: u64`")
        );
    }

    #[test]
    fn lock_text_round_trips() {
        let a = lock(&[(1000, "hello", "Greeter::hello(String)->String")]);
        let back: Lock = serde_json::from_str(&a.to_text()).unwrap_or_default();
        assert_eq!(back, a);
    }
}
