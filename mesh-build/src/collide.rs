//! Command ids that collide anywhere in one build: within a crate, and between this crate
//! and every crate below it that uses mesh-build.

use std::collections::BTreeSet;

use crate::manifest::{Manifest, ServiceEntry};

/// One line per pair of services that share command ids; empty when none do.
pub fn collisions(manifests: &[Manifest]) -> Vec<String> {
    let all: Vec<(&Manifest, &ServiceEntry)> = manifests
        .iter()
        .flat_map(|m| m.services.iter().map(move |s| (m, s)))
        .collect();
    let used: BTreeSet<u16> = all.iter().flat_map(|(_, s)| s.ids()).collect();
    let mut out = Vec::new();
    for (i, (ma, a)) in all.iter().enumerate() {
        let ids_a: BTreeSet<u16> = a.ids().into_iter().collect();
        for (mb, b) in &all[i + 1..] {
            let shared: Vec<u16> = b
                .ids()
                .into_iter()
                .filter(|id| ids_a.contains(id))
                .collect();
            if shared.is_empty() {
                continue;
            }
            let width = b.methods.len().max(1);
            let fix = match free_base(&used, width) {
                Some(base) => format!(
                    "move `{}` to a free range, e.g. #[mesh_service(id = {base})] (ids {base}-{})",
                    b.name,
                    usize::from(base) + width - 1
                ),
                None => "move one of them to a free range below 65000".to_string(),
            };
            out.push(format!(
                "service `{}` ({}) and service `{}` ({}) both use command ids {}: `{}` has {}, `{}` has {}; {fix}",
                a.name,
                origin(ma, a),
                b.name,
                origin(mb, b),
                ranges(&shared),
                a.name,
                ranges(&a.ids()),
                b.name,
                ranges(&b.ids()),
            ));
        }
    }
    out
}

fn origin(m: &Manifest, s: &ServiceEntry) -> String {
    format!("crate {} {}, {}", m.package, m.version, s.location)
}

/// The lowest base above every used id with `width` free ids after it.
fn free_base(used: &BTreeSet<u16>, width: usize) -> Option<u16> {
    let next = used.last().map_or(1000, |&top| u32::from(top) + 1);
    // Round up to a multiple of 100: ranges that read well.
    let base = next.div_ceil(100) * 100;
    let end = base + u32::try_from(width).ok()? - 1;
    if end < 65000 {
        u16::try_from(base).ok()
    } else {
        None
    }
}

/// `1000-1002, 1010` for sorted ids.
pub(crate) fn ranges(ids: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = ids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FORMAT, Location, MethodEntry};

    fn service(name: &str, ids: &[u16]) -> ServiceEntry {
        ServiceEntry {
            name: name.into(),
            path: name.into(),
            base_id: ids[0],
            location: Location {
                file: "src/lib.rs".into(),
                line: 3,
            },
            methods: ids
                .iter()
                .map(|&id| MethodEntry {
                    name: format!("m{id}"),
                    id,
                    kind: "request".into(),
                    args: vec![],
                    returns: "()".into(),
                    signature: String::new(),
                    fingerprint: 1,
                })
                .collect(),
        }
    }

    fn manifest(package: &str, services: Vec<ServiceEntry>) -> Manifest {
        Manifest {
            format: FORMAT,
            package: package.into(),
            version: "0.1.0".into(),
            services,
            shared_objects: vec![],
        }
    }

    #[test]
    fn ranges_compress() {
        assert_eq!(
            ranges(&[1000, 1001, 1002, 1010, 1012, 1013]),
            "1000-1002, 1010, 1012-1013"
        );
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[65535]), "65535");
    }

    #[test]
    fn overlaps_across_crates_name_both_sides() {
        let a = manifest("a", vec![service("Greeter", &[1000, 1001, 1002])]);
        let b = manifest("b", vec![service("Chat", &[1002, 1003])]);
        let c = collisions(&[a, b]);
        assert_eq!(c.len(), 1, "{c:?}");
        let line = &c[0];
        for part in [
            "`Greeter`",
            "crate a 0.1.0",
            "`Chat`",
            "crate b 0.1.0",
            "ids 1002:",
            "1000-1002",
            "1002-1003",
            "id = 1100",
        ] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
    }

    #[test]
    fn disjoint_services_and_one_crate() {
        let a = manifest(
            "a",
            vec![service("A", &[1000, 1001]), service("B", &[1002])],
        );
        assert!(collisions(&[a]).is_empty());
        let a = manifest(
            "a",
            vec![service("A", &[1000, 1001]), service("B", &[1001])],
        );
        assert_eq!(collisions(&[a]).len(), 1);
    }

    #[test]
    fn no_free_range_near_the_top() {
        let used: BTreeSet<u16> = [64990].into_iter().collect();
        assert_eq!(free_base(&used, 5), None);
        assert_eq!(free_base(&BTreeSet::new(), 5), Some(1000));
    }
}
