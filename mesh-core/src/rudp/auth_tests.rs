//! The cluster key on the wire: who can join, what a forged or replayed packet can do, and
//! key rotation on live sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::sim::{Net, addr};
use super::tests::{delivered, raw_packet};
use super::wire::{self, Header, Kind};
use super::{ClusterKey, Config, Event, Failure, Keyring, RejectReason, UnreachableReason};

fn key(byte: u8) -> ClusterKey {
    ClusterKey::from_bytes([byte; 32])
}

fn keyed(byte: u8) -> Config {
    Config {
        keyring: Some(Keyring::new(key(byte))),
        ..Config::default()
    }
}

fn received(net: &Net, node: usize) -> usize {
    net.nodes[node].received.len()
}

/// Records every datagram from `from` to `to`.
fn tap(net: &mut Net, from: usize, to: usize) -> Rc<RefCell<Vec<Vec<u8>>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let (src, dst) = (addr(from), addr(to));
    net.mangle = Some(Box::new(
        move |f: SocketAddr, t: SocketAddr, d: &mut Vec<u8>| {
            if f == src && t == dst {
                log.borrow_mut().push(d.clone());
            }
        },
    ));
    seen
}

fn keyed_pair(seed: u64) -> (Net, usize, usize) {
    let mut net = Net::new(seed);
    let a = net.add(keyed(1));
    let b = net.add(keyed(1));
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"hi"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 1));
    (net, a, b)
}

#[test]
fn keyed_peers_exchange_everything_under_loss_and_no_payload_travels_in_clear() {
    let mut net = Net::new(11);
    net.loss = 0.05;
    net.dup = 0.02;
    let a = net.add(keyed(1));
    let b = net.add(keyed(1));
    let seen = tap(&mut net, a, b);
    let secret = b"SECRET-PAYLOAD-0123456789";
    let big: Vec<u8> = secret.iter().copied().cycle().take(200_000).collect();
    for i in 0..50u8 {
        let mut m = secret.to_vec();
        m.push(i);
        net.nodes[a]
            .ep
            .send(net.now, addr(b), i % 2, Bytes::from(m))
            .unwrap();
    }
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 1, Bytes::from(big.clone()))
        .unwrap();
    net.nodes[a]
        .ep
        .send_datagram(net.now, addr(b), Bytes::from_static(b"SECRET-DATAGRAM"))
        .ok();
    net.nodes[b]
        .ep
        .send(net.now, addr(a), 0, Bytes::from_static(b"SECRET-BACK"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| {
        delivered(n, a) == 51 && received(n, a) == 1
    }));
    let got = &net.nodes[b].received;
    assert!(
        got.iter()
            .any(|m| m.data.len() == big.len() && m.data[..] == big[..])
    );
    assert_eq!(&net.nodes[a].received[0].data[..], b"SECRET-BACK");

    let seen = seen.borrow();
    assert!(seen.len() > 150);
    for d in seen.iter() {
        let (h, _) = Header::decode(d).unwrap();
        assert_eq!(
            h.flags,
            wire::FLAG_AUTH,
            "{:?} without the auth flag",
            h.kind
        );
        assert!(
            !d.windows(6).any(|w| w == b"SECRET"),
            "a {:?} packet carries the payload in clear",
            h.kind
        );
    }
    assert_eq!(net.nodes[b].ep.counters().drops.bad_auth, 0);
}

#[test]
fn a_node_with_another_key_cannot_open_a_session_and_is_counted() {
    let mut net = Net::new(12);
    let a = net.add(keyed(1));
    let b = net.add(keyed(2));
    let id = net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"let me in"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::Failed { id: i, .. } if *i == id))
    }));
    assert!(net.nodes[a].events.iter().any(|e| matches!(
        e,
        Event::Unreachable {
            reason: UnreachableReason::HandshakeTimeout,
            ..
        }
    )));
    assert_eq!(received(&net, b), 0);
    assert_eq!(net.nodes[b].ep.session_count(), 0);
    assert!(net.nodes[b].ep.counters().drops.bad_auth > 0);
}

#[test]
fn a_node_without_a_key_is_refused_and_told_why() {
    let mut net = Net::new(13);
    let a = net.add(Config::default());
    let b = net.add(keyed(1));
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"plain"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(3), |n| {
        n.nodes[a].events.iter().any(|e| {
            matches!(
                e,
                Event::Incompatible {
                    reason: RejectReason::KeyRequired,
                    ..
                }
            )
        })
    }));
    assert!(net.nodes[b].events.iter().any(|e| matches!(
        e,
        Event::Incompatible {
            reason: RejectReason::Unauthenticated,
            ..
        }
    )));
    assert_eq!(received(&net, b), 0);
    assert_eq!(net.nodes[b].ep.session_count(), 0);
    assert!(net.nodes[b].ep.counters().drops.unauthenticated > 0);

    // And the other way: a keyed node cannot talk to a keyless one either.
    let mut net = Net::new(14);
    let a = net.add(keyed(1));
    let b = net.add(Config::default());
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"sealed"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(3), |n| {
        n.nodes[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::Incompatible { .. }))
    }));
    assert_eq!(received(&net, b), 0);
}

#[test]
fn forged_packets_from_a_members_address_neither_inject_nor_end_the_session() {
    let (mut net, a, b) = keyed_pair(15);
    let seen = tap(&mut net, a, b);
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"one"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 2));
    let data = seen
        .borrow()
        .iter()
        .find(|d| Header::decode(d).is_ok_and(|(h, _)| h.kind == Kind::Data))
        .cloned()
        .unwrap();
    net.mangle = None;
    let (h, _) = Header::decode(&data).unwrap();
    let cluster = h.cluster;
    let sid = h.session;
    let inc_a = net.nodes[a].ep.incarnation();
    let before = net.nodes[b].ep.counters().drops.clone();
    let now = net.now;
    let ep = &mut net.nodes[b].ep;
    let from = addr(a);

    // Data under the live session id, with a made-up body, or the real one altered.
    let mut forged = data[..wire::HEADER_LEN].to_vec();
    forged.extend_from_slice(&[0x7f; 40]);
    ep.handle(now, from, &forged);
    let mut altered = data.clone();
    let last = altered.len() - 20;
    altered[last] ^= 0x01;
    ep.handle(now, from, &altered);
    // The real packet again: authentic, but already received.
    ep.handle(now, from, &data);

    // Resets: unauthenticated, with a made-up MAC.
    let mut reset = Vec::new();
    wire::HelloBody {
        incarnation: inc_a ^ 1,
        echo: 0,
        fresh: false,
        cookie: None,
    }
    .encode(&mut reset);
    ep.handle(now, from, &raw_packet(Kind::Reset, cluster, sid, &reset));
    let mut fake = wire::packet(Kind::Reset, wire::FLAG_AUTH, cluster, sid, |o| {
        o.extend_from_slice(&reset)
    });
    fake.extend_from_slice(&[0u8; 16]);
    ep.handle(now, from, &fake);
    // A Reject without authentication, and one with a made-up MAC.
    let mut reject = Vec::new();
    wire::encode_reject(RejectReason::Version { theirs: 9, ours: 2 }, &mut reject);
    ep.handle(now, from, &raw_packet(Kind::Reject, cluster, sid, &reject));
    let mut fake = wire::packet(Kind::Reject, wire::FLAG_AUTH, cluster, sid, |o| {
        o.extend_from_slice(&reject)
    });
    fake.extend_from_slice(&[0u8; 16]);
    ep.handle(now, from, &fake);
    // A HelloAck for the session, and a Hello claiming a restart without the key.
    let mut ack = Vec::new();
    wire::encode_keyed(
        &[0u8; 48],
        &wire::HelloBody {
            incarnation: inc_a ^ 1,
            echo: ep.incarnation(),
            fresh: true,
            cookie: None,
        },
        &mut ack,
    );
    ep.handle(
        now,
        from,
        &wire::packet(Kind::HelloAck, wire::FLAG_AUTH, cluster, sid, |o| {
            o.extend_from_slice(&ack)
        }),
    );
    ep.handle(
        now,
        from,
        &wire::packet(Kind::Hello, wire::FLAG_AUTH, cluster, sid + 1, |o| {
            o.extend_from_slice(&ack)
        }),
    );

    let drops = ep.counters().drops.clone();
    assert_eq!(drops.bad_auth - before.bad_auth, 4, "{drops:?}");
    assert_eq!(drops.duplicate - before.duplicate, 1);
    assert_eq!(drops.unauthenticated - before.unauthenticated, 2);
    assert_eq!(ep.session_id(from), Some(sid));
    // Nothing was delivered, nothing failed, and the session still carries messages.
    assert_eq!(received(&net, b), 2);
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"two"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 3));
    assert_eq!(received(&net, b), 3);
    assert!(
        !net.nodes[a]
            .events
            .iter()
            .chain(&net.nodes[b].events)
            .any(|e| matches!(
                e,
                Event::Failed { .. }
                    | Event::Restarted { .. }
                    | Event::Unreachable { .. }
                    | Event::Incompatible { .. }
            ))
    );
}

#[test]
fn simultaneous_opens_with_a_key_end_in_one_session() {
    for seed in 20..30 {
        let mut net = Net::new(seed);
        let a = net.add(keyed(1));
        let b = net.add(keyed(1));
        let now = net.now;
        net.nodes[a]
            .ep
            .send(now, addr(b), 0, Bytes::from_static(b"from a"))
            .unwrap();
        net.nodes[b]
            .ep
            .send(now, addr(a), 0, Bytes::from_static(b"from b"))
            .unwrap();
        assert!(
            net.run_until(Duration::from_secs(2), |n| delivered(n, a) == 1
                && delivered(n, b) == 1),
            "seed {seed}"
        );
        assert_eq!(
            net.nodes[a].ep.session_id(addr(b)),
            net.nodes[b].ep.session_id(addr(a))
        );
    }
}

#[test]
fn a_restarted_keyed_peer_is_detected_and_reconnects() {
    let (mut net, a, b) = keyed_pair(31);
    let old = net.nodes[b].ep.incarnation();
    net.restart(b, keyed(1));
    net.nodes[b]
        .ep
        .send(net.now, addr(a), 0, Bytes::from_static(b"back"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| delivered(n, b) == 1));
    assert!(net.nodes[a].events.iter().any(|e| matches!(
        e,
        Event::Restarted { old: o, .. } if *o == old
    )));
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"again"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| delivered(n, a) == 2));
}

#[test]
fn keys_rotate_on_a_live_cluster_without_a_failed_message() {
    let (mut net, a, b) = keyed_pair(32);
    let send_ab = |net: &mut Net, n: usize| {
        for _ in 0..n {
            net.nodes[a]
                .ep
                .send(net.now, addr(b), 0, Bytes::from_static(b"x"))
                .unwrap();
        }
    };
    let new = key(9);
    // 1. Install the new key everywhere; 2. use it everywhere; 3. remove the old one.
    for i in [a, b] {
        net.nodes[i]
            .ep
            .keyring_mut()
            .unwrap()
            .install(new.clone())
            .unwrap();
    }
    send_ab(&mut net, 5);
    // A node that only knows the new key joins between the steps.
    let c = net.add(Config {
        keyring: Some(Keyring::new(new.clone())),
        ..Config::default()
    });
    net.nodes[c]
        .ep
        .send(net.now, addr(a), 0, Bytes::from_static(b"new key"))
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(2), |n| delivered(n, c) == 1
            && delivered(n, a) == 6)
    );
    net.nodes[a]
        .ep
        .keyring_mut()
        .unwrap()
        .use_key(new.id())
        .unwrap();
    // A, now on the new key, opens a session to C (which accepts only the new key).
    net.nodes[a]
        .ep
        .send(net.now, addr(c), 0, Bytes::from_static(b"hello c"))
        .unwrap();
    net.nodes[b]
        .ep
        .keyring_mut()
        .unwrap()
        .use_key(new.id())
        .unwrap();
    send_ab(&mut net, 5);
    for i in [a, b] {
        net.nodes[i]
            .ep
            .keyring_mut()
            .unwrap()
            .remove(key(1).id())
            .unwrap();
    }
    send_ab(&mut net, 5);
    net.nodes[b]
        .ep
        .send(net.now, addr(c), 0, Bytes::from_static(b"b to c"))
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(3), |n| delivered(n, a) == 17
            && delivered(n, b) == 1)
    );
    for n in &net.nodes {
        assert!(
            !n.events.iter().any(|e| matches!(e, Event::Failed { .. })),
            "{:?}",
            n.events
        );
        assert_eq!(n.ep.counters().drops.bad_auth, 0);
    }
    // A node still on the removed key is now locked out.
    let d = net.add(keyed(1));
    let id = net.nodes[d]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"old key"))
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[d].events.iter().any(
            |e| matches!(e, Event::Failed { id: i, error: Failure::Unreachable(_), .. } if *i == id)
        ))
    );
}

#[test]
fn strict_membership_reads_members_and_the_peers_we_called_only() {
    let mut net = Net::new(41);
    let a = net.add(keyed(1));
    let b = net.add(keyed(1));
    let c = net.add(keyed(1));
    // a lists b only; c holds the key but is not a member.
    net.nodes[a].ep.restrict_to_members(Some([addr(b)]));
    for from in [b, c] {
        net.nodes[from]
            .ep
            .send(net.now, addr(a), 0, Bytes::from_static(b"to a"))
            .unwrap();
    }
    assert!(net.run_until(Duration::from_secs(3), |n| {
        delivered(n, b) == 1
            && n.nodes[c]
                .events
                .iter()
                .any(|e| matches!(e, Event::Failed { .. }))
    }));
    assert_eq!(received(&net, a), 1);
    assert!(net.nodes[a].ep.counters().drops.not_member > 0);
    assert_eq!(
        net.nodes[a].ep.counters().drops.unproven_hello,
        1,
        "c was never read"
    );
    // a may still call c: the answers of a peer it opened a session to come in.
    net.nodes[a]
        .ep
        .send(net.now, addr(c), 0, Bytes::from_static(b"a calls c"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| delivered(n, a) == 1));
    // Lifting the restriction lets anyone with the key in.
    net.nodes[a].ep.restrict_to_members(None::<Vec<SocketAddr>>);
    let d = net.add(keyed(1));
    net.nodes[d]
        .ep
        .send(net.now, addr(a), 0, Bytes::from_static(b"d"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(3), |n| delivered(n, d) == 1));
}
