//! Deterministic protocol tests over the simulated network.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::sim::{Net, addr};
use super::wire::{self, Header, Kind};
use super::{Config, Event, Failure, MessageId, RejectReason, SendError, UnreachableReason};

fn payload(i: u32, len: usize) -> Bytes {
    let mut v = i.to_be_bytes().to_vec();
    v.resize(len.max(4), (i % 251) as u8);
    Bytes::from(v)
}

pub(super) fn delivered(net: &Net, node: usize) -> usize {
    net.nodes[node]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count()
}

fn failures(net: &Net, node: usize) -> Vec<(MessageId, Failure)> {
    net.nodes[node]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { id, error, .. } => Some((*id, *error)),
            _ => None,
        })
        .collect()
}

/// Sends `n` messages over two channels with sizes from 1 byte to a few datagrams and checks
/// exactly-once, in-order delivery per channel.
fn exactly_once_in_order(loss: f64, seed: u64) {
    let mut net = Net::new(seed);
    net.loss = loss;
    net.dup = 0.02;
    net.jitter = Duration::from_micros(200);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    let n = 10_000u32;
    for i in 0..n {
        let len = [1usize, 32, 300, 1500, 4000][(i % 5) as usize];
        let ch = (i % 2) as u8;
        net.nodes[a]
            .ep
            .send(net.now, addr(b), ch, payload(i, len))
            .unwrap();
    }
    let ok = net.run_until(Duration::from_secs(120), |net| {
        net.nodes[b].received.len() >= n as usize && delivered(net, a) >= n as usize
    });
    assert!(
        ok,
        "loss {loss}: received {} of {n}, delivered {}",
        net.nodes[b].received.len(),
        delivered(&net, a)
    );
    // Let any stray duplicates arrive, then check.
    net.run_until(Duration::from_millis(50), |_| false);
    let mut per_channel: HashMap<u8, Vec<u32>> = HashMap::new();
    for m in &net.nodes[b].received {
        let id = u32::from_be_bytes(m.data[..4].try_into().unwrap());
        per_channel.entry(m.channel.unwrap()).or_default().push(id);
    }
    for ch in 0..2u8 {
        let want: Vec<u32> = (0..n).filter(|i| (i % 2) as u8 == ch).collect();
        assert_eq!(per_channel[&ch], want, "channel {ch} at loss {loss}");
    }
    assert!(failures(&net, a).is_empty());
    assert_eq!(net.nodes[b].received.len(), n as usize);
}

#[test]
fn ten_thousand_messages_no_loss() {
    exactly_once_in_order(0.0, 1);
}

#[test]
fn ten_thousand_messages_5pct_loss() {
    exactly_once_in_order(0.05, 2);
}

#[test]
fn ten_thousand_messages_20pct_loss() {
    exactly_once_in_order(0.20, 3);
}

#[test]
fn ten_megabytes_under_5pct_loss() {
    let mut net = Net::new(4);
    net.loss = 0.05;
    net.rate = Some(125_000_000);
    net.jitter = Duration::from_micros(100);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    let big: Bytes = (0..10 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 1, big.clone())
        .unwrap();
    assert!(net.run_until(Duration::from_secs(60), |n| delivered(n, a) == 1));
    assert_eq!(net.nodes[b].received.len(), 1);
    assert!(net.nodes[b].received[0].data == big);
    assert!(net.nodes[a].ep.counters().packets_lost > 0);
}

/// Two nodes with `cfg` (and `rate` on their uplinks) whose session is open: a first
/// message from `a` to `b` on `channel` was delivered.
pub(super) fn connected(
    seed: u64,
    cfg: Config,
    rate: Option<u64>,
    channel: u8,
) -> (Net, usize, usize) {
    let mut net = Net::new(seed);
    net.rate = rate;
    let a = net.add(cfg.clone());
    let b = net.add(cfg);
    net.nodes[a]
        .ep
        .send(net.now, addr(b), channel, Bytes::from_static(b"hi"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 1));
    (net, a, b)
}

/// Loses the datagrams from node `from` to node `to` whose number (from 1) `pick` selects;
/// the returned cell counts the datagrams seen on that path.
fn lose(
    net: &mut Net,
    from: usize,
    to: usize,
    pick: impl Fn(u32) -> bool + 'static,
) -> std::rc::Rc<std::cell::Cell<u32>> {
    let seen = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let counter = seen.clone();
    let (src, dst) = (addr(from), addr(to));
    net.mangle = Some(Box::new(move |f, t, d: &mut Vec<u8>| {
        if f == src && t == dst {
            counter.set(counter.get() + 1);
            if pick(counter.get()) {
                d.clear(); // an empty datagram is dropped as malformed
            }
        }
    }));
    seen
}

#[test]
fn lost_acks_make_the_sender_probe_not_resend_its_window() {
    let (mut net, a, b) = connected(21, Config::default(), Some(125_000_000), 0);
    // Every datagram from b to a is lost for a while (a stalled path or a string of lost
    // ACKs) while a has a window of data in flight; everything a sent does arrive.
    let seen = lose(&mut net, b, a, |n| n <= 12);
    let big: Bytes = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 1, big.clone())
        .unwrap();
    let ok = net.run_until(Duration::from_secs(10), |n| delivered(n, a) == 2);
    assert!(
        ok,
        "not delivered: a {:?}\nb {:?}\ndropped {}",
        net.nodes[a].ep.counters(),
        net.nodes[b].ep.counters(),
        seen.get()
    );
    assert!(net.nodes[b].received[1].data == big);
    assert!(seen.get() > 12);
    let c = net.nodes[a].ep.counters();
    assert!(c.timeouts > 0, "the stall should have fired a timeout");
    assert_eq!(c.packets_lost, 0, "nothing was lost: {c:?}");
    // Only the probes (two per timeout) carried data a second time.
    assert!(
        c.retransmitted_bytes <= c.timeouts * 2 * 1200,
        "{} bytes resent for {} timeouts",
        c.retransmitted_bytes,
        c.timeouts
    );
}

#[test]
fn tail_loss_is_repaired_by_a_probe_before_the_full_timeout() {
    let (mut net, a, b) = connected(22, Config::default(), None, 0);
    // The last datagram of a 10-datagram message is lost.
    lose(&mut net, a, b, |n| n == 10);
    let t0 = net.now;
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 1, payload(7, 10 * 1150))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 2));
    assert!(net.nodes[b].received[1].data == payload(7, 10 * 1150));
    // A tail-loss probe goes after about 2 RTTs (1 ms here, the timer granularity),
    // well before the full retransmission timeout (3 ms at least).
    let took = net.now - t0;
    assert!(took < Duration::from_millis(3), "repaired after {took:?}");
    assert_eq!(net.nodes[a].ep.counters().timeouts, 1);
}

#[test]
fn a_long_batch_of_datagrams_makes_an_acknowledgement_overdue() {
    // Windows wide enough that one burst holds more than 64 datagrams.
    let cfg = Config {
        initial_window: 256 * 1200,
        channel_window: 1 << 20,
        ..Config::default()
    };
    let (mut net, a, b) = connected(23, cfg, None, 1);
    // Collect a window of datagrams from a without delivering them (channel 1: bulk data,
    // and channel 0 unused, so a whole congestion window goes out).
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 1, Bytes::from(vec![3u8; 200 * 1024]))
        .unwrap();
    let now = net.now;
    let mut datagrams = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = net.nodes[a].ep.poll_transmit(now, &mut buf, 16) {
        datagrams.extend(buf.chunks(t.segment_size).map(<[u8]>::to_vec));
    }
    assert!(datagrams.len() > 64, "{} datagrams", datagrams.len());
    let ep = &mut net.nodes[b].ep;
    let mut overdue_at = None;
    for (i, d) in datagrams.iter().enumerate() {
        ep.handle(now, addr(a), d);
        if ep.ack_overdue() {
            overdue_at = Some(i + 1);
            break;
        }
    }
    assert_eq!(overdue_at, Some(64));
    let t = ep
        .poll_transmit(now, &mut buf, 16)
        .expect("an acknowledgement");
    assert_eq!(t.destination, addr(a));
    assert!(!ep.ack_overdue());
}

#[test]
fn small_message_is_not_held_behind_a_large_one() {
    let mut net = Net::new(5);
    net.rate = Some(125_000_000); // 1 Gbit/s: 10 MB take about 80 ms on the wire
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    let big = Bytes::from(vec![1u8; 10 * 1024 * 1024]);
    net.nodes[a].ep.send(net.now, addr(b), 1, big).unwrap();
    // Let the bulk transfer get going, then send a small message on channel 0.
    net.run_until(Duration::from_millis(2), |_| false);
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"ping"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| !n.nodes[b].received.is_empty()));
    assert!(
        net.nodes[b].received[0].data == Bytes::from_static(b"ping"),
        "the small message came after the large one"
    );
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[b].received.len() == 2));
}

#[test]
fn restarted_peer_fails_messages_in_flight_with_restarted() {
    let mut net = Net::new(6);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"hi"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 1));
    let old = net.nodes[a].ep.peer_incarnation(addr(b)).unwrap();
    // b dies with messages in flight to it, then comes back as a new process.
    net.nodes[b].up = false;
    for i in 0..5 {
        net.nodes[a]
            .ep
            .send(net.now, addr(b), 0, payload(i, 100))
            .unwrap();
    }
    net.run_until(Duration::from_millis(20), |_| false);
    net.restart(b, Config::default());
    let ok = net.run_until(Duration::from_secs(2), |n| failures(n, a).len() == 5);
    assert!(ok, "events: {:?}", net.nodes[a].events);
    for (_, f) in failures(&net, a) {
        assert!(
            matches!(f, Failure::Restarted { old: o, .. } if o == old),
            "{f:?}"
        );
    }
    assert!(
        net.nodes[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::Restarted { .. }))
    );
    // The session works again with the new incarnation.
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"again"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| n.nodes[b].received.len() == 1));
    assert_ne!(net.nodes[a].ep.peer_incarnation(addr(b)), Some(old));
}

#[test]
fn restarted_peer_that_calls_first_is_detected() {
    let mut net = Net::new(7);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"hi"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 1));
    net.restart(b, Config::default());
    net.nodes[b]
        .ep
        .send(net.now, addr(a), 0, Bytes::from_static(b"i am back"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| !n.nodes[a].received.is_empty()));
    assert!(
        net.nodes[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::Restarted { .. }))
    );
}

#[test]
fn silent_peer_is_unreachable_after_peer_timeout_once_per_message() {
    let mut net = Net::new(8);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"hi"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| delivered(n, a) == 1));
    net.nodes[b].up = false;
    let t0 = net.now;
    for i in 0..10 {
        net.nodes[a]
            .ep
            .send(net.now, addr(b), (i % 2) as u8, payload(i, 3000))
            .unwrap();
    }
    assert!(net.run_until(Duration::from_secs(5), |n| failures(n, a).len() >= 10));
    net.run_until(Duration::from_secs(2), |_| false);
    let f = failures(&net, a);
    assert_eq!(f.len(), 10, "exactly one failure per message");
    assert!(
        f.iter()
            .all(|(_, e)| *e == Failure::Unreachable(UnreachableReason::Timeout))
    );
    let waited = net.now - t0;
    assert!(
        waited >= Duration::from_secs(1),
        "declared after {waited:?}"
    );
    assert!(
        net.nodes[a]
            .events
            .iter()
            .any(|e| matches!(e, Event::Unreachable { .. }))
    );
}

#[test]
fn nobody_there_fails_with_handshake_timeout() {
    let mut net = Net::new(9);
    let a = net.add(Config::default());
    let ghost = addr(50);
    for i in 0..3 {
        net.nodes[a]
            .ep
            .send(net.now, ghost, 0, payload(i, 10))
            .unwrap();
    }
    assert!(net.run_until(Duration::from_secs(3), |n| failures(n, a).len() == 3));
    assert!(
        failures(&net, a)
            .iter()
            .all(|(_, e)| *e == Failure::Unreachable(UnreachableReason::HandshakeTimeout))
    );
}

#[test]
fn other_cluster_is_refused_and_reported_on_both_ends() {
    let mut net = Net::new(10);
    let a = net.add(Config {
        cluster_id: super::cluster_id("blue"),
        ..Config::default()
    });
    let b = net.add(Config {
        cluster_id: super::cluster_id("green"),
        ..Config::default()
    });
    let id = net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"x"))
        .unwrap();
    assert!(net.run_until(Duration::from_millis(500), |n| !failures(n, a).is_empty()));
    assert!(matches!(
        failures(&net, a)[..],
        [(i, Failure::Incompatible(RejectReason::OtherCluster { .. }))] if i == id
    ));
    assert!(
        net.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::Incompatible { .. }))
    );
    assert!(net.nodes[b].ep.counters().drops.other_cluster >= 1);
    assert!(net.nodes[b].received.is_empty());
}

#[test]
fn unsupported_wire_version_is_refused_with_a_clear_error() {
    let mut net = Net::new(11);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    let from_a = addr(a);
    // Everything a sends claims wire version 9.
    net.mangle = Some(Box::new(move |from, _to, d: &mut Vec<u8>| {
        if from == from_a && d.len() > 2 {
            d[2] = 9;
        }
    }));
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"x"))
        .unwrap();
    assert!(net.run_until(Duration::from_millis(500), |n| !failures(n, a).is_empty()));
    assert!(
        matches!(
            failures(&net, a)[0].1,
            Failure::Incompatible(RejectReason::Version { theirs: 1, ours: 1 })
        ) || matches!(
            failures(&net, a)[0].1,
            Failure::Incompatible(RejectReason::Version { .. })
        )
    );
    assert!(net.nodes[b].ep.counters().drops.version >= 1);
    let msg = failures(&net, a)[0].1.to_string();
    assert!(msg.contains("wire version"), "{msg}");
}

#[test]
fn simultaneous_open_converges() {
    let mut net = Net::new(12);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    for i in 0..50 {
        net.nodes[a]
            .ep
            .send(net.now, addr(b), 0, payload(i, 10))
            .unwrap();
        net.nodes[b]
            .ep
            .send(net.now, addr(a), 0, payload(i, 10))
            .unwrap();
    }
    assert!(net.run_until(Duration::from_secs(2), |n| {
        n.nodes[a].received.len() == 50 && n.nodes[b].received.len() == 50
    }));
    assert!(failures(&net, a).is_empty() && failures(&net, b).is_empty());
}

#[test]
fn oversize_is_refused_on_both_ends() {
    let mut net = Net::new(13);
    let a = net.add(Config::default());
    let small = Config {
        max_message_size: 64 * 1024,
        max_peer_buffer: 1024 * 1024,
        max_send_queue: 1024 * 1024,
        ..Config::default()
    };
    let b = net.add(small);
    // Locally: over our own limit.
    let too_big = Bytes::from(vec![0u8; 10 * 1024 * 1024 + 1]);
    assert!(matches!(
        net.nodes[a].ep.send(net.now, addr(b), 1, too_big),
        Err(SendError::TooLarge { .. })
    ));
    // Remotely: over the receiver's limit, then a normal message still arrives.
    let id = net.nodes[a]
        .ep
        .send(net.now, addr(b), 1, Bytes::from(vec![0u8; 100_000]))
        .unwrap();
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 1, Bytes::from_static(b"after"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(2), |n| n.nodes[b].received.len() == 1));
    assert_eq!(net.nodes[b].received[0].data, Bytes::from_static(b"after"));
    assert!(net.run_until(Duration::from_secs(1), |n| !failures(n, a).is_empty()));
    assert_eq!(
        failures(&net, a),
        vec![(
            id,
            Failure::TooLarge {
                size: 100_000,
                max: 64 * 1024
            }
        )]
    );
    assert!(
        net.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, Event::Refused { size: 100_000, .. }))
    );
}

#[test]
fn unreliable_datagrams() {
    let mut net = Net::new(14);
    let a = net.add(Config::default());
    let b = net.add(Config::default());
    let max = net.nodes[a].ep.config().max_unreliable_payload();
    assert!(matches!(
        net.nodes[a]
            .ep
            .send_datagram(net.now, addr(b), Bytes::from(vec![0u8; max + 1])),
        Err(SendError::TooLarge { .. })
    ));
    for i in 0..20 {
        net.nodes[a]
            .ep
            .send_datagram(net.now, addr(b), payload(i, max))
            .unwrap();
    }
    assert!(net.run_until(Duration::from_secs(1), |n| n.nodes[b].received.len() == 20));
    assert!(net.nodes[b].received.iter().all(|m| m.channel.is_none()));
}

#[test]
fn non_consuming_receiver_stalls_the_sender_without_loss() {
    let mut net = Net::new(15);
    let cfg = Config {
        max_message_size: 64 * 1024,
        max_send_queue: 256 * 1024,
        max_peer_buffer: 1024 * 1024,
        ..Config::default()
    };
    let a = net.add(cfg.clone());
    let b = net.add(cfg);
    net.nodes[b].consume = false;
    let mut sent = 0u32;
    let mut full = false;
    for _ in 0..200 {
        match net.nodes[a]
            .ep
            .send(net.now, addr(b), 0, payload(sent, 1000))
        {
            Ok(_) => sent += 1,
            Err(SendError::Full { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        net.run_until(Duration::from_micros(200), |_| false);
    }
    // Long after: the receiver holds at most its credit, the rest waits at the sender.
    net.run_until(Duration::from_millis(500), |_| false);
    let held = net.nodes[b].ep.pending_messages();
    assert!(
        held > 0 && (held as u32) < sent,
        "held {held} of {sent}, full {full}, queued {}",
        net.nodes[a].ep.queued_bytes(addr(b))
    );
    assert!(net.nodes[b].ep.buffered_memory() <= 64 * 1024 * 4);
    assert!(net.nodes[a].ep.queued_bytes(addr(b)) > 0);
    // Still connected: a stalled receiver is not a dead one.
    assert!(failures(&net, a).is_empty());
    // Now consume: everything arrives, in order, exactly once.
    net.nodes[b].consume = true;
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[b].received.len()
            == sent as usize)
    );
    let ids: Vec<u32> = net.nodes[b]
        .received
        .iter()
        .map(|m| u32::from_be_bytes(m.data[..4].try_into().unwrap()))
        .collect();
    assert_eq!(ids, (0..sent).collect::<Vec<_>>());
    let _ = full;
}

/// Everything a simulated run produced: every datagram delivered (with its time), every
/// message received and every event, per node, and each node's hash keys.
type Replay = (
    Vec<(Duration, usize, std::net::SocketAddr, Vec<u8>)>,
    Vec<Vec<super::Incoming>>,
    Vec<Vec<Event>>,
    Vec<super::hash::FastState>,
);

/// Three nodes sending to each other over a lossy, duplicating, jittery network.
fn replay(seed: u64) -> Replay {
    let mut net = Net::new(seed);
    net.record = true;
    net.loss = 0.1;
    net.dup = 0.05;
    net.jitter = Duration::from_micros(300);
    let nodes: Vec<usize> = (0..3).map(|_| net.add(Config::default())).collect();
    let n = 60u32;
    for i in 0..n {
        let from = nodes[(i % 3) as usize];
        let to = nodes[((i + 1 + i / 3) % 3) as usize];
        if from == to {
            continue;
        }
        let len = [1usize, 40, 1500, 5000][(i % 4) as usize];
        net.nodes[from]
            .ep
            .send(net.now, addr(to), (i % 2) as u8, payload(i, len))
            .unwrap();
    }
    net.run_until(Duration::from_secs(30), |net| {
        net.nodes.iter().all(|n| n.ep.total_queued_bytes() == 0)
    });
    let received = net.nodes.iter().map(|n| n.received.clone()).collect();
    let events = net.nodes.iter().map(|n| n.events.clone()).collect();
    let keys = net.nodes.iter().map(|n| n.ep.hash_keys()).collect();
    (net.trace, received, events, keys)
}

#[test]
fn one_seed_replays_exactly() {
    let a = replay(21);
    let b = replay(21);
    assert!(a.0.len() > 100, "{} datagrams", a.0.len());
    assert!(a.1.iter().map(Vec::len).sum::<usize>() > 0);
    assert_eq!(a.0, b.0, "datagrams differ");
    assert_eq!(a.1, b.1, "received messages differ");
    assert_eq!(a.2, b.2, "events differ");
    assert_eq!(a.3, b.3, "hash keys differ");
    // The keys come from each endpoint's seed: they differ between nodes and between seeds.
    assert_ne!(a.3[0], a.3[1]);
    let c = replay(22);
    assert_ne!(a.3, c.3);
    assert_ne!(a.0, c.0, "another seed should make another run");
}

pub(super) fn raw_packet(kind: Kind, cluster: u32, session: u64, body: &[u8]) -> Vec<u8> {
    wire::packet(kind, 0, cluster, session, |out| out.extend_from_slice(body))
}

/// Opens a session on `ep` as a raw peer at `from` would: a Hello, the Retry's cookie
/// echoed in a second Hello. Returns the packets `ep` sent back for the second one.
pub(super) fn raw_handshake(
    ep: &mut super::Endpoint,
    now: std::time::Instant,
    from: std::net::SocketAddr,
    incarnation: u64,
    session: u64,
) -> Vec<Vec<u8>> {
    let cluster = ep.config().cluster_id;
    let mut hello = Vec::new();
    wire::HelloBody {
        incarnation,
        echo: 0,
        fresh: false,
        cookie: None,
    }
    .encode(&mut hello);
    ep.handle(
        now,
        from,
        &raw_packet(Kind::Hello, cluster, session, &hello),
    );
    let mut buf = Vec::new();
    let mut cookie = None;
    while let Some(t) = ep.poll_transmit(now, &mut buf, 1) {
        if t.destination == from
            && let Ok((h, body)) = Header::decode(&buf)
            && h.kind == Kind::Retry
        {
            cookie = <wire::Cookie>::try_from(body).ok();
        }
    }
    let mut hello = Vec::new();
    wire::HelloBody {
        incarnation,
        echo: 0,
        fresh: false,
        cookie,
    }
    .encode(&mut hello);
    ep.handle(
        now,
        from,
        &raw_packet(Kind::Hello, cluster, session, &hello),
    );
    let mut sent = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf, 1) {
        if t.destination == from {
            sent.push(buf.clone());
        }
    }
    sent
}

#[test]
fn flood_of_first_fragments_cannot_grow_memory_past_the_cap() {
    let cfg = Config {
        max_message_size: 1024 * 1024,
        max_peer_buffer: 2 * 1024 * 1024,
        max_total_buffer: 8 * 1024 * 1024,
        max_send_queue: 1024 * 1024,
        ..Config::default()
    };
    let cap = cfg.max_total_buffer;
    let cluster = cfg.cluster_id;
    let mut ep = super::Endpoint::new(cfg, 77, 1).unwrap();
    let now = std::time::Instant::now();
    let mut buf = Vec::new();
    for peer in 0..500u16 {
        let from = std::net::SocketAddr::from(([127, 0, 0, 2], 10_000 + peer));
        raw_handshake(&mut ep, now, from, 1000 + u64::from(peer), 5);
        while ep.poll_transmit(now, &mut buf, 1).is_some() {}
        // Each "first fragment" announces a 1 MiB message on every channel, then fragments
        // land at scattered offsets.
        for pn in 0..40u64 {
            let mut body = Vec::new();
            wire::varint::put(&mut body, pn);
            let ch = (pn % 4) as u8;
            let offset = if pn < 4 { 0 } else { (pn * 7919) % (1 << 20) };
            let mut data = vec![0xAAu8; 1000];
            if offset == 0 {
                let mut prefix = Vec::new();
                wire::varint::put(&mut prefix, 1024 * 1024);
                data[..prefix.len()].copy_from_slice(&prefix);
            }
            wire::Frame::Stream {
                channel: ch,
                offset,
                data: &data,
            }
            .encode(&mut body);
            ep.handle(now, from, &raw_packet(Kind::Data, cluster, 5, &body));
            assert!(ep.reserved_memory() <= cap);
            assert!(ep.buffered_memory() <= cap);
        }
    }
    assert!(
        ep.counters().drops.session_limit > 0,
        "the budget refused sessions"
    );
    assert!(
        ep.counters().drops.flow_control > 0,
        "fragments past credit were dropped"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let cfg = Config::default();
        let cluster = cfg.cluster_id;
        let mut ep = super::Endpoint::new(cfg, 9, 9).unwrap();
        let now = std::time::Instant::now();
        let from = addr(1);
        // With an established session, random bodies after a valid header reach the frame parser.
        raw_handshake(&mut ep, now, from, 5, 3);
        prop_assert_eq!(ep.session_count(), 1);
        ep.handle(now, from, &data);
        for kind in [Kind::Data, Kind::Hello, Kind::HelloAck, Kind::Reset, Kind::Reject, Kind::Retry] {
            ep.handle(now, from, &raw_packet(kind, cluster, 3, &data));
        }
        let mut buf = Vec::new();
        while ep.poll_transmit(now, &mut buf, 4).is_some() {}
        ep.handle_timeout(now + Duration::from_secs(5));
        while ep.poll_event().is_some() {}
        while ep.poll_message().is_some() {}
    }
}
