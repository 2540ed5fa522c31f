use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::shared::schema::{FieldKind, FieldSpec};
use crate::shared::wire::BackupChoice;

fn me() -> NodeId {
    NodeId::new("127.0.0.1:9000".parse().unwrap(), 7)
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn schema() -> Schema {
    Schema {
        type_name: "Counter".into(),
        fields: vec![FieldSpec {
            id: 0,
            name: "n".into(),
            kind: FieldKind::Counter {
                min: 0,
                max: 100,
                clamp: false,
            },
        }],
    }
}

fn table(limits: SharedLimits) -> OwnerTable {
    OwnerTable::new(me(), limits)
}

fn create(
    t: &mut OwnerTable,
    ttl: Option<Duration>,
    sub: Option<SocketAddr>,
    now: Instant,
) -> Snapshot {
    t.create(
        schema(),
        vec![FieldState::Counter(0)],
        ttl,
        sub,
        None,
        BackupChoice::None,
        now,
    )
    .unwrap()
}

const INC: [Op; 1] = [Op::Inc { field: 0, by: 1 }];

#[test]
fn writes_get_consecutive_versions_and_reach_subscribers() {
    let now = Instant::now();
    let mut t = table(SharedLimits::default());
    let snap = create(&mut t, None, Some(peer(1)), now);
    assert_eq!((snap.epoch, snap.version), (1, 1));
    assert_eq!(snap.id.owner, me());
    let c = t.write(snap.id, &INC, now).unwrap().committed();
    assert_eq!((c.version, c.subscribers.clone()), (2, vec![peer(1)]));
    let fp = schema().fingerprint();
    t.read(snap.id, fp, "Counter", Some(peer(2))).unwrap();
    let c = t.write(snap.id, &INC, now).unwrap().committed();
    assert_eq!(c.version, 3);
    assert_eq!(c.subscribers, vec![peer(1), peer(2)]);
    t.unsubscribe(snap.id, peer(1));
    t.forget_node(peer(2));
    assert!(
        t.write(snap.id, &INC, now)
            .unwrap()
            .committed()
            .subscribers
            .is_empty()
    );
    // A refused write takes no version.
    let big = [Op::Inc { field: 0, by: 1000 }];
    assert!(t.write(snap.id, &big, now).is_err());
    assert_eq!(t.write(snap.id, &INC, now).unwrap().committed().version, 5);
    assert_eq!(t.list()[0].version, 5);
}

#[test]
fn reads_check_the_type_and_other_owners_ids_are_not_found() {
    let now = Instant::now();
    let mut t = table(SharedLimits::default());
    let snap = create(&mut t, None, None, now);
    assert!(matches!(
        t.read(snap.id, 12345, "Other", None),
        Err(Refusal::WrongType { .. })
    ));
    // 0 is a resync: the type was checked at subscription.
    assert!(t.read(snap.id, 0, "", None).is_ok());
    let foreign = ObjectId {
        owner: NodeId::new(me().addr, 8),
        serial: snap.id.serial,
    };
    assert_eq!(t.write(foreign, &INC, now).unwrap_err(), Refusal::NotFound);
}

#[test]
fn ttl_counts_from_the_last_write() {
    let t0 = Instant::now();
    let ttl = Duration::from_secs(10);
    let mut t = table(SharedLimits::default());
    let snap = create(&mut t, Some(ttl), Some(peer(1)), t0);
    assert_eq!(t.next_expiry(), Some(t0 + ttl));
    t.write(snap.id, &INC, t0 + Duration::from_secs(5)).unwrap();
    assert!(t.expire(t0 + ttl).is_empty());
    assert_eq!(t.next_expiry(), Some(t0 + Duration::from_secs(15)));
    let gone = t.expire(t0 + Duration::from_secs(15));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].reason, RemoveReason::Expired);
    assert_eq!(gone[0].subscribers, vec![peer(1)]);
    assert!(t.list().is_empty());
    assert_eq!(t.next_expiry(), None);
}

#[test]
fn remove_tells_subscribers_and_then_refuses() {
    let now = Instant::now();
    let mut t = table(SharedLimits::default());
    let snap = create(&mut t, Some(Duration::from_secs(1)), Some(peer(3)), now);
    let gone = t.remove(snap.id).unwrap();
    assert_eq!(gone.reason, RemoveReason::Removed);
    assert_eq!(gone.subscribers, vec![peer(3)]);
    assert_eq!(t.remove(snap.id).unwrap_err(), Refusal::NotFound);
    assert_eq!(t.next_expiry(), None);
}

#[test]
fn limits_are_refused() {
    let now = Instant::now();
    let limits = SharedLimits {
        max_objects: 2,
        max_subscribers: 1,
        ..SharedLimits::default()
    };
    let mut t = table(limits);
    let a = create(&mut t, None, None, now);
    create(&mut t, None, None, now);
    assert_eq!(
        t.create(
            schema(),
            vec![FieldState::Counter(0)],
            None,
            None,
            None,
            BackupChoice::None,
            now
        )
        .unwrap_err(),
        Refusal::TooManyObjects { max: 2 }
    );
    let fp = schema().fingerprint();
    t.read(a.id, fp, "Counter", Some(peer(1))).unwrap();
    assert_eq!(
        t.read(a.id, fp, "Counter", Some(peer(2))).unwrap_err(),
        Refusal::TooManySubscribers { max: 1 }
    );
    // The same subscriber again is not a new one.
    t.read(a.id, fp, "Counter", Some(peer(1))).unwrap();
}

#[test]
fn schemas_no_derive_produces_are_refused() {
    let now = Instant::now();
    let mut t = table(SharedLimits::default());
    let mut twice = schema();
    twice.fields.push(twice.fields[0].clone());
    let r = t.create(
        twice,
        vec![FieldState::Counter(0), FieldState::Counter(0)],
        None,
        None,
        None,
        BackupChoice::None,
        now,
    );
    assert!(matches!(r, Err(Refusal::Malformed { .. })));
    let mut empty = schema();
    empty.fields[0].kind = FieldKind::Counter {
        min: 5,
        max: 1,
        clamp: false,
    };
    let r = t.create(
        empty,
        vec![FieldState::Counter(3)],
        None,
        None,
        None,
        BackupChoice::None,
        now,
    );
    assert!(matches!(r, Err(Refusal::Malformed { .. })));
    assert!(t.list().is_empty());
}
