//! A seeded simulation of one owner and three replicas over a network that drops deltas
//! (the owner then sends a resync notice, as its full send queue does), duplicates and
//! reorders them: every replica converges to the owner's state, applies each write once
//! and reports its events in version order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::SharedObject;
use crate::shared::SharedLimits;
use crate::shared::owner::OwnerTable;
use crate::shared::owner::Written;
use crate::shared::schema::Schema;
use crate::shared::state::Op;
use crate::shared::wire::BackupChoice;

/// An object for the simulation.
#[derive(SharedObject, Clone, Default, Debug, PartialEq)]
pub(super) struct Sim {
    #[shared(min = 0, max = 1_000_000)]
    total: i64,
    label: String,
    #[shared(max_len = 16)]
    slots: BTreeMap<u8, u32>,
}

/// What travels from the owner to one replica.
enum Msg {
    Delta(u32, u64, Vec<Effect>),
    Resync,
}

struct Peer {
    replica: Replica<Sim>,
    events: broadcast::Receiver<SharedEvent>,
    inbox: Vec<Msg>,
    /// Steps the replica has been ahead of a gap (the runtime's grace period).
    gapped_for: u32,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2000 + i as u16))
}

fn snapshot(owner: &mut OwnerTable, id: ObjectId) -> Snapshot {
    owner.read(id, 0, "", None).unwrap()
}

fn random_op(rng: &mut StdRng) -> Op {
    let key = |rng: &mut StdRng| crate::codec::encode(&rng.random_range(0u8..24)).unwrap();
    match rng.random_range(0..4) {
        0 | 1 => Op::Inc { field: 0, by: 1 },
        2 => Op::Put {
            field: 2,
            key: key(rng),
            value: crate::codec::encode(&rng.random::<u32>()).unwrap(),
        },
        _ if rng.random_bool(0.5) => Op::Delete {
            field: 2,
            key: key(rng),
        },
        _ => Op::Set {
            field: 1,
            value: crate::codec::encode(&format!("l{}", rng.random::<u16>())).unwrap(),
        },
    }
}

fn deliver(owner: &mut OwnerTable, id: ObjectId, p: &mut Peer, msg: Msg) {
    match msg {
        Msg::Delta(epoch, version, effects) => {
            p.replica.delta(epoch, version, None, effects);
        }
        Msg::Resync => {
            let snap = snapshot(owner, id);
            p.replica.snapshot(&snap).unwrap();
        }
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Instant::now();
    let me = crate::node::NodeId::new(addr(0), 1);
    let mut owner = OwnerTable::new(me, SharedLimits::default());
    let subs: Vec<_> = (1..=3).map(addr).collect();
    let schema = Schema::from_defs(Sim::TYPE_NAME, Sim::FIELDS);
    let first = owner
        .create(
            schema,
            Sim::default().to_fields().unwrap(),
            None,
            None,
            None,
            BackupChoice::None,
            now,
        )
        .unwrap();
    let id = first.id;
    for s in &subs {
        owner
            .read(id, first.fingerprint, Sim::TYPE_NAME, Some(*s))
            .unwrap();
    }
    let mut peers: Vec<Peer> = subs
        .iter()
        .map(|_| {
            let replica = Replica::<Sim>::new(&first, Weak::new()).unwrap();
            let events = replica.subscribe_events();
            Peer {
                replica,
                events,
                inbox: Vec::new(),
                gapped_for: 0,
            }
        })
        .collect();
    let mut accepted_incs = 0i64;
    for _ in 0..400 {
        // Writers: one to three ops, sometimes refused (a full map), never half-applied.
        let ops: Vec<Op> = (0..rng.random_range(1..=3))
            .map(|_| random_op(&mut rng))
            .collect();
        let incs = ops.iter().filter(|o| matches!(o, Op::Inc { .. })).count() as i64;
        if let Ok(c) = owner.write(id, &ops, now).map(Written::committed) {
            accepted_incs += incs;
            for p in &mut peers {
                if rng.random_bool(0.05) {
                    // Dropped at a full queue: the owner notices and sends a resync.
                    p.inbox.push(Msg::Resync);
                    continue;
                }
                p.inbox
                    .push(Msg::Delta(c.epoch, c.version, c.effects.clone()));
                if rng.random_bool(0.05) {
                    p.inbox
                        .push(Msg::Delta(c.epoch, c.version, c.effects.clone()));
                }
            }
        }
        // The network delivers some of what is in flight, in any order.
        for p in &mut peers {
            while !p.inbox.is_empty() && rng.random_bool(0.6) {
                let i = rng.random_range(0..p.inbox.len());
                let msg = p.inbox.swap_remove(i);
                deliver(&mut owner, id, p, msg);
            }
            // Past the grace period, a replica still ahead of a gap reads a snapshot.
            p.gapped_for = if p.replica.gapped() {
                p.gapped_for + 1
            } else {
                0
            };
            if p.gapped_for > 5 {
                deliver(&mut owner, id, p, Msg::Resync);
                p.gapped_for = 0;
            }
        }
    }
    let last = snapshot(&mut owner, id);
    let truth = Sim::from_fields(&last.fields).unwrap();
    assert_eq!(
        truth.total, accepted_incs,
        "seed {seed}: the owner counts each inc once"
    );
    for (n, p) in peers.iter_mut().enumerate() {
        while let Some(msg) = p.inbox.pop() {
            deliver(&mut owner, id, p, msg);
        }
        if p.replica.gapped() {
            deliver(&mut owner, id, p, Msg::Resync);
        }
        let st = p.replica.read();
        assert_eq!(st.version, last.version, "seed {seed}, replica {n}");
        assert_eq!(st.value, truth, "seed {seed}, replica {n}");
        drop(st);
        let mut seen = 0;
        while let Ok(e) = p.events.try_recv() {
            if let SharedEvent::Updated { version, .. } = e {
                assert!(version > seen, "seed {seed}: events in version order");
                seen = version;
            }
        }
    }
}

#[test]
fn replicas_converge_under_loss_duplication_and_reordering() {
    for seed in 0..40 {
        run(seed);
    }
}

#[test]
fn duplicates_and_stale_epochs_are_ignored() {
    let first = Snapshot {
        id: ObjectId {
            owner: crate::node::NodeId::new(addr(0), 1),
            serial: 1,
        },
        owner: crate::node::NodeId::new(addr(0), 1),
        backup: None,
        fingerprint: 0,
        epoch: 2,
        version: 1,
        fields: Sim::default().to_fields().unwrap(),
    };
    let r = Replica::<Sim>::new(&first, Weak::new()).unwrap();
    let inc = |v: i128| vec![Effect::Counter { field: 0, value: v }];
    assert_eq!(r.delta(2, 2, None, inc(1)), Flow::Done);
    assert_eq!(r.delta(2, 2, None, inc(1)), Flow::Done);
    // An older epoch's write (a fenced owner) changes nothing.
    assert_eq!(r.delta(1, 3, None, inc(99)), Flow::Done);
    assert_eq!(r.read().value.total, 1);
    // Ahead of a gap: held, then applied in order once the gap fills.
    assert_eq!(r.delta(2, 4, None, inc(3)), Flow::Gap);
    assert!(r.gapped());
    assert_eq!(r.read().value.total, 1);
    assert_eq!(r.delta(2, 3, None, inc(2)), Flow::Done);
    assert_eq!((r.read().version, r.read().value.total), (4, 3));
    assert!(!r.gapped());
}
