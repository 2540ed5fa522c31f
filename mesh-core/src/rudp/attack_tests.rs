//! Packets an attacker can send: each test reproduces an attack that worked on an earlier
//! version and checks it no longer does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sim::addr;
use super::tests::{connected, raw_handshake, raw_packet};
use super::wire::{self, Header, Kind};
use super::{Config, Endpoint, Event};

fn hello(incarnation: u64, cookie: Option<wire::Cookie>) -> Vec<u8> {
    let mut b = Vec::new();
    wire::HelloBody {
        incarnation,
        echo: 0,
        fresh: false,
        cookie,
    }
    .encode(&mut b);
    b
}

fn spoofed(i: u32) -> SocketAddr {
    let [a, b, c, d] = (0x0a10_0000u32 + i).to_be_bytes();
    let _ = a;
    SocketAddr::from(([127, b, c, d], 20_000))
}

/// Datagrams `ep` has to send now, as (destination, bytes).
fn drain(ep: &mut Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf, 1) {
        out.push((t.destination, buf.clone()));
    }
    out
}

#[test]
fn spoofed_hellos_allocate_nothing_and_a_real_peer_still_gets_in() {
    let cfg = Config::default();
    let cluster = cfg.cluster_id;
    let mut ep = Endpoint::new(cfg, 77, 1).unwrap();
    let now = Instant::now();
    // Far more than the 512 sessions the receive budget holds.
    for i in 0..5_000u32 {
        let h = raw_packet(Kind::Hello, cluster, 5, &hello(1000 + u64::from(i), None));
        ep.handle(now, spoofed(i), &h);
        for (to, p) in drain(&mut ep, now) {
            assert_eq!(to, spoofed(i));
            let (head, _) = Header::decode(&p).unwrap();
            assert_eq!(head.kind, Kind::Retry);
            assert!(p.len() <= h.len(), "a Retry never amplifies");
        }
    }
    assert_eq!(ep.session_count(), 0);
    assert_eq!(ep.reserved_memory(), 0);
    assert_eq!(ep.counters().drops.unproven_hello, 5_000);
    // A forged cookie does not pass either.
    let h = raw_packet(Kind::Hello, cluster, 5, &hello(9, Some([0x55; 16])));
    ep.handle(now, spoofed(1), &h);
    assert_eq!(ep.session_count(), 0);
    // A peer that receives at its address gets in.
    let sent = raw_handshake(&mut ep, now, addr(1), 42, 7);
    assert_eq!(ep.session_count(), 1);
    assert_eq!(ep.peer_incarnation(addr(1)), Some(42));
    let (head, _) = Header::decode(&sent[0]).unwrap();
    assert_eq!(head.kind, Kind::HelloAck);
}

#[test]
fn one_address_cannot_take_every_session_and_stale_handshakes_make_room() {
    let cfg = Config {
        max_sessions_per_ip: 8,
        max_peer_buffer: 10 * 1024 * 1024 + 256 * 1024,
        // Room for 48 sessions of 256 KiB credit.
        max_total_buffer: 12 * 1024 * 1024,
        ..Config::default()
    };
    let timeout = cfg.peer_timeout;
    let mut ep = Endpoint::new(cfg, 77, 1).unwrap();
    let now = Instant::now();
    for port in 0..40u16 {
        let from = SocketAddr::from(([127, 0, 0, 9], 30_000 + port));
        raw_handshake(&mut ep, now, from, 500 + u64::from(port), 3);
    }
    assert_eq!(ep.session_count(), 8, "one IP address holds at most 8");
    assert_eq!(ep.counters().drops.address_limit, 32);
    // Proven handshakes from many addresses fill the budget, and send no data.
    for i in 0..100u32 {
        raw_handshake(&mut ep, now, spoofed(i), 9000 + u64::from(i), 3);
    }
    assert_eq!(ep.session_count(), 48);
    let later = now + timeout + Duration::from_millis(1);
    // While they are fresh, a newcomer is refused ...
    raw_handshake(&mut ep, now, addr(1), 42, 7);
    assert_eq!(ep.peer_incarnation(addr(1)), None);
    // ... once they are older than peer_timeout, they make room for it.
    raw_handshake(&mut ep, later, addr(1), 42, 7);
    assert_eq!(ep.peer_incarnation(addr(1)), Some(42));
    assert_eq!(ep.counters().drops.half_open, 48);
    assert_eq!(ep.session_count(), 1);
}

#[test]
fn a_session_with_data_is_never_reclaimed() {
    let cfg = Config {
        max_peer_buffer: 10 * 1024 * 1024 + 256 * 1024,
        max_total_buffer: 10 * 1024 * 1024 + 256 * 1024,
        ..Config::default()
    };
    // Budget for 41 sessions; a real pair talks, then 60 stale handshakes arrive.
    let (mut net, a, b) = connected(3, cfg, None, 0);
    let later = net.now + Duration::from_secs(5);
    let ep = &mut net.nodes[b].ep;
    for i in 0..60u32 {
        raw_handshake(ep, later, spoofed(i), 9000 + u64::from(i), 3);
    }
    let far = later + Duration::from_secs(5);
    raw_handshake(ep, far, addr(50), 4242, 3);
    assert!(
        ep.peer_incarnation(addr(a)).is_some(),
        "the real peer kept its session"
    );
    assert_eq!(ep.peer_incarnation(addr(50)), Some(4242));
}

#[test]
fn forged_handshake_packets_do_not_kill_a_live_session() {
    let (mut net, a, b) = connected(4, Config::default(), None, 0);
    let cluster = Config::default().cluster_id;
    let inc_a = net.nodes[b].ep.peer_incarnation(addr(a)).unwrap();
    let now = net.now;
    let ep = &mut net.nodes[b].ep;
    // Guessed session ids: 0, 1 and a large one.
    for id in [0u64, 1, 1 << 40, u64::MAX] {
        // A Reject that does not echo the session id.
        let mut body = Vec::new();
        wire::encode_reject(
            wire::RejectReason::OtherCluster {
                theirs: 1,
                ours: cluster,
            },
            &mut body,
        );
        ep.handle(now, addr(a), &raw_packet(Kind::Reject, cluster, id, &body));
        // A Hello with a new incarnation (a "restart") and no cookie.
        ep.handle(
            now,
            addr(a),
            &raw_packet(Kind::Hello, cluster, id, &hello(inc_a + 1, None)),
        );
        // A HelloAck with a new incarnation for another session id.
        let mut ack = Vec::new();
        wire::HelloBody {
            incarnation: inc_a + 2,
            echo: 1,
            fresh: true,
            cookie: None,
        }
        .encode(&mut ack);
        ep.handle(now, addr(a), &raw_packet(Kind::HelloAck, cluster, id, &ack));
        // A Retry for a session that is not connecting.
        ep.handle(
            now,
            addr(a),
            &raw_packet(Kind::Retry, cluster, id, &[7; 16]),
        );
    }
    assert_eq!(ep.peer_incarnation(addr(a)), Some(inc_a), "session intact");
    while let Some(e) = ep.poll_event() {
        assert!(
            !matches!(
                e,
                Event::Incompatible { .. } | Event::Restarted { .. } | Event::Unreachable { .. }
            ),
            "{e:?}"
        );
    }
    // And the session still carries messages.
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"still here"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| {
        n.nodes[b]
            .received
            .iter()
            .any(|m| &m.data[..] == b"still here")
    }));
}

#[test]
fn a_reject_that_echoes_our_hello_is_believed() {
    let cfg = Config::default();
    let mut ep = Endpoint::new(cfg, 77, 1).unwrap();
    let now = Instant::now();
    ep.send(now, addr(2), 0, Bytes::from_static(b"x")).unwrap();
    let out = drain(&mut ep, now);
    let (h, _) = Header::decode(&out[0].1).unwrap();
    assert_eq!(h.kind, Kind::Hello);
    let mut body = Vec::new();
    wire::encode_reject(
        wire::RejectReason::OtherCluster {
            theirs: 1,
            ours: h.cluster,
        },
        &mut body,
    );
    // Wrong echo: ignored. Right echo: the peer is incompatible.
    ep.handle(
        now,
        addr(2),
        &raw_packet(Kind::Reject, 1, h.session ^ 1, &body),
    );
    assert_eq!(ep.session_count(), 1);
    ep.handle(now, addr(2), &raw_packet(Kind::Reject, 1, h.session, &body));
    assert_eq!(ep.session_count(), 0);
    let mut incompatible = false;
    while let Some(e) = ep.poll_event() {
        incompatible |= matches!(e, Event::Incompatible { .. });
    }
    assert!(incompatible);
}

#[test]
fn the_largest_packet_numbers_are_refused_without_overflow() {
    let (mut net, a, b) = connected(5, Config::default(), None, 0);
    let cluster = Config::default().cluster_id;
    let now = net.now;
    let ep = &mut net.nodes[b].ep;
    // An attacker on the path knows the session id.
    let id = ep.session_id(addr(a)).unwrap();
    let before = ep.counters().drops.malformed;
    for pn in [u64::MAX, u64::MAX, u64::MAX - 1, 1 << 62] {
        let mut body = Vec::new();
        wire::varint::put(&mut body, pn);
        wire::Frame::Ping.encode(&mut body);
        ep.handle(now, addr(a), &raw_packet(Kind::Data, cluster, id, &body));
    }
    assert_eq!(ep.counters().drops.malformed, before + 4);
    assert!(ep.peer_incarnation(addr(a)).is_some());
    // The session still works.
    net.nodes[a]
        .ep
        .send(net.now, addr(b), 0, Bytes::from_static(b"ok"))
        .unwrap();
    assert!(net.run_until(Duration::from_secs(1), |n| {
        n.nodes[b].received.iter().any(|m| &m.data[..] == b"ok")
    }));
}

#[test]
fn one_flooding_source_does_not_use_up_the_refusals_of_others() {
    let cfg = Config::default();
    let cluster = cfg.cluster_id;
    let mut ep = Endpoint::new(cfg, 77, 1).unwrap();
    let now = Instant::now();
    let mut body = Vec::new();
    wire::varint::put(&mut body, 0);
    wire::Frame::Ping.encode(&mut body);
    let data = raw_packet(Kind::Data, cluster, 99, &body);
    let mut to_flooder = 0;
    for _ in 0..10_000 {
        ep.handle(now, spoofed(1), &data);
        to_flooder += drain(&mut ep, now).len();
    }
    assert!(
        to_flooder <= 20,
        "{to_flooder} resets to one address in a second"
    );
    // A real peer whose session we lost still hears about it at once.
    ep.handle(now, addr(2), &data);
    let out = drain(&mut ep, now);
    assert_eq!(out.len(), 1);
    assert_eq!(Header::decode(&out[0].1).unwrap().0.kind, Kind::Reset);
}

#[test]
fn a_flood_of_handshakes_does_not_erase_what_we_know_of_real_peers() {
    let (mut net, a, b) = connected(6, Config::default(), None, 0);
    let now = net.now;
    let inc_a = net.nodes[b].ep.peer_incarnation(addr(a)).unwrap();
    let ep = &mut net.nodes[b].ep;
    ep.close(addr(a));
    // More handshakes than the table of remembered peers holds, each closed again.
    for i in 0..10_000u32 {
        raw_handshake(ep, now, spoofed(i), 5000 + u64::from(i), 3);
        ep.close(spoofed(i));
    }
    while ep.poll_event().is_some() {}
    // The real peer comes back restarted: that is still noticed.
    raw_handshake(ep, now, addr(a), inc_a + 1, 1 << 40);
    let mut restarted = false;
    while let Some(e) = ep.poll_event() {
        restarted |= matches!(e, Event::Restarted { old, .. } if old == inc_a);
    }
    assert!(restarted);
}

/// Announces a message of `len` bytes on `channel` of the raw session `from` has with `ep`
/// (its first datagram only, as an attacker that never finishes would send).
fn announce_large(
    ep: &mut Endpoint,
    now: Instant,
    from: SocketAddr,
    pn: u64,
    channel: u8,
    len: u64,
) {
    let cluster = ep.config().cluster_id;
    let id = ep.session_id(from).unwrap();
    let mut data = Vec::new();
    wire::varint::put(&mut data, len);
    data.resize(1000, 0xAB);
    let mut body = Vec::new();
    wire::varint::put(&mut body, pn);
    wire::Frame::Stream {
        channel,
        offset: 0,
        data: &data,
    }
    .encode(&mut body);
    ep.handle(now, from, &raw_packet(Kind::Data, cluster, id, &body));
}

/// Security finding 7: peers that announce large messages and never finish them hold their
/// reservations. Peers at one IP address now hold at most `max_buffer_per_ip` of them, so a
/// real peer elsewhere still gets room for its large message.
#[test]
fn unfinished_large_messages_from_one_address_cannot_take_the_budget() {
    let cfg = Config::default();
    let base = cfg.channel_window * usize::from(cfg.channels);
    let per_ip = cfg.max_buffer_per_ip;
    let mut ep = Endpoint::new(cfg, 77, 1).unwrap();
    let now = Instant::now();
    let ten_mib = 10 * 1024 * 1024;
    for port in 0..8u16 {
        let from = SocketAddr::from(([127, 0, 0, 9], 40_000 + port));
        raw_handshake(&mut ep, now, from, 700 + u64::from(port), 3);
        for ch in 0..2u8 {
            announce_large(&mut ep, now, from, u64::from(ch), ch, ten_mib);
        }
    }
    let held = ep.reserved_memory() - 8 * base;
    assert!(held <= per_ip, "{held} bytes reserved by one address");
    // A real peer at another address announces a large message: it gets its reservation.
    let before = ep.reserved_memory();
    raw_handshake(&mut ep, now, addr(1), 42, 7);
    announce_large(&mut ep, now, addr(1), 0, 0, ten_mib);
    let granted = ep.reserved_memory() - before - base;
    assert!(granted as u64 >= ten_mib - 64 * 1024, "granted {granted}");
}

/// Security finding 7, the rest: peers at several IP addresses that announce large
/// messages and then send nothing more (only acknowledgements) fill the whole budget. A
/// real peer that then waits for memory makes the endpoint close the sessions whose
/// reservation has not moved for `2 * peer_timeout`, and gets its reservation.
#[test]
fn stalled_large_messages_are_reclaimed_when_a_real_peer_waits() {
    let cfg = Config::default();
    let base = cfg.channel_window * usize::from(cfg.channels);
    let stall = cfg.peer_timeout * 2;
    let mut ep = Endpoint::new(cfg, 77, 1).unwrap();
    let start = Instant::now();
    let ten_mib = 10 * 1024 * 1024;
    let mut attackers = Vec::new();
    for ip in 9..12u8 {
        for port in 0..8u16 {
            let from = SocketAddr::from(([127, 0, 0, ip], 40_000 + port));
            raw_handshake(
                &mut ep,
                start,
                from,
                700 + u64::from(port) + 100 * u64::from(ip),
                3,
            );
            for ch in 0..2u8 {
                announce_large(&mut ep, start, from, u64::from(ch), ch, ten_mib);
            }
            attackers.push(from);
        }
    }
    // The real peer announces a large message: no memory is left.
    let real = addr(1);
    raw_handshake(&mut ep, start, real, 42, 7);
    let before = ep.reserved_memory();
    announce_large(&mut ep, start, real, 0, 0, ten_mib);
    assert!(
        ep.reserved_memory() - before < 1024 * 1024,
        "granted at once"
    );
    // Soon after, nothing is reclaimed: a large message may take a moment.
    let soon = start + stall / 2;
    announce_large(&mut ep, soon, real, 1, 2, 1000);
    assert_eq!(ep.counters().drops.stalled, 0);
    // Past the stall limit, the next packet of the waiting peer reclaims the stalled ones.
    let later = start + stall + Duration::from_millis(1);
    announce_large(&mut ep, later, real, 2, 3, 1000);
    let reclaimed = ep.counters().drops.stalled;
    assert!(reclaimed > 0, "nothing reclaimed");
    assert!(reclaimed <= attackers.len() as u64);
    assert!(
        ep.reserved_memory() >= base + ten_mib as usize - 64 * 1024,
        "the real peer's reservation: {} bytes reserved in all",
        ep.reserved_memory()
    );
    assert!(
        ep.session_id(real).is_some(),
        "the real peer keeps its session"
    );
}
