//! Entry points for the fuzz targets in `fuzz/` and for the replay of their corpus by
//! `cargo test` (`tests/fuzz_corpus.rs`). Not part of the API: each takes arbitrary bytes
//! and must return without a panic, whatever they are.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rudp::wire::{self, Header, HelloBody, Kind};
use crate::rudp::{Config, Endpoint};

/// The peer the datagram target's packets come from.
fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4000))
}

fn packet(kind: Kind, cluster: u32, session: u64, body: &[u8]) -> Vec<u8> {
    wire::packet(kind, 0, cluster, session, |out| out.extend_from_slice(body))
}

/// Feeds `data` to a protocol endpoint that has a session with the sender: as a whole
/// datagram, and as the body of a `Data` packet of that session (so the frame parser,
/// reassembly and acknowledgement handling see it), then runs its timers and drains it.
pub fn datagram(data: &[u8]) {
    let cfg = Config::default();
    let cluster = cfg.cluster_id;
    let Ok(mut ep) = Endpoint::new(cfg, 9, 9) else {
        return;
    };
    let now = Instant::now();
    let from = peer();
    // The handshake, cookie included.
    let mut cookie = None;
    let mut buf = Vec::new();
    for _ in 0..2 {
        let mut body = Vec::new();
        HelloBody {
            incarnation: 5,
            echo: 0,
            fresh: false,
            cookie,
        }
        .encode(&mut body);
        ep.handle(now, from, &packet(Kind::Hello, cluster, 3, &body));
        while ep.poll_transmit(now, &mut buf, 1).is_some() {
            if let Ok((h, rest)) = Header::decode(&buf)
                && h.kind == Kind::Retry
            {
                cookie = <wire::Cookie>::try_from(rest).ok();
            }
        }
    }
    ep.handle(now, from, data);
    ep.handle(now, from, &packet(Kind::Data, cluster, 3, data));
    for kind in [
        Kind::Hello,
        Kind::HelloAck,
        Kind::Reset,
        Kind::Reject,
        Kind::Retry,
    ] {
        ep.handle(now, from, &packet(kind, cluster, 3, data));
    }
    while ep.poll_transmit(now, &mut buf, 4).is_some() {}
    ep.handle_timeout(now + Duration::from_secs(5));
    while ep.poll_transmit(now, &mut buf, 4).is_some() {}
    while ep.poll_event().is_some() {}
    while ep.poll_message().is_some() {}
}

/// Drives the keyed handshake and session of two endpoints (A and B, one cluster key)
/// through a script read from `data`: deliver what is pending, drop it, inject a forged
/// packet of any kind into A as if from B, replay or alter a captured packet, let time
/// pass, restart B. Oracle: A takes no message but B's own, whatever the script did (only
/// a holder of the key can make one).
pub fn handshake(data: &[u8]) {
    handshake_script(data);
}

/// [`handshake`]; returns how many messages A took.
#[allow(clippy::panic)]
fn handshake_script(data: &[u8]) -> usize {
    use crate::rudp::{ClusterKey, Keyring};
    let mut taken = 0;
    let cfg = Config {
        keyring: Some(Keyring::new(ClusterKey::from_bytes([7; 32]))),
        ..Config::default()
    };
    let cluster = cfg.cluster_id;
    let (Ok(mut a), Ok(mut b)) = (
        Endpoint::new(cfg.clone(), 11, 1),
        Endpoint::new(cfg.clone(), 22, 2),
    ) else {
        return 0;
    };
    let (pa, pb) = (
        SocketAddr::from(([127, 0, 0, 1], 4001)),
        SocketAddr::from(([127, 0, 0, 1], 4002)),
    );
    let mut now = Instant::now();
    let _ = b.send(now, pa, 0, Bytes::from_static(b"from b"));
    let _ = a.send(now, pb, 0, Bytes::from_static(b"from a"));
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::new();
    let mut input = data;
    let mut take = |n: usize| -> &[u8] {
        let (head, rest) = input.split_at(n.min(input.len()));
        input = rest;
        head
    };
    let mut restarts = 0u64;
    while let Some(&op) = take(1).first() {
        match op % 6 {
            // Deliver what both sides have to send (a few rounds), keeping copies.
            0 => {
                for _ in 0..4 {
                    for (from, to) in [(0, 1), (1, 0)] {
                        let (src, dst, addr) = if from == 0 {
                            (&mut a, &mut b, pa)
                        } else {
                            (&mut b, &mut a, pb)
                        };
                        let mut out = Vec::new();
                        while let Some(t) = src.poll_transmit(now, &mut buf, 1) {
                            if out.len() < 64 {
                                out.push(buf[..t.segment_size.min(buf.len())].to_vec());
                            }
                        }
                        for p in out {
                            dst.handle(now, addr, &p);
                            if captured.len() < 64 && to == 0 {
                                captured.push(p);
                            }
                        }
                    }
                }
            }
            // Lose what is pending.
            1 => {
                while a.poll_transmit(now, &mut buf, 4).is_some() {}
                while b.poll_transmit(now, &mut buf, 4).is_some() {}
            }
            // A forged packet into A from B's address, under the session id on the wire.
            2 => {
                let head = take(3);
                let (kind, flags, len) = match head {
                    [k, f, l] => (*k, *f, usize::from(*l)),
                    _ => break,
                };
                let kind = match kind % 6 {
                    0 => Kind::Hello,
                    1 => Kind::HelloAck,
                    2 => Kind::Data,
                    3 => Kind::Reset,
                    4 => Kind::Reject,
                    _ => Kind::Retry,
                };
                let session = captured
                    .last()
                    .and_then(|p| Header::decode(p).ok())
                    .map_or(1, |(h, _)| h.session);
                let body = take(len).to_vec();
                let p = wire::packet(kind, flags & 0xF0, cluster, session, |out| {
                    out.extend_from_slice(&body)
                });
                a.handle(now, pb, &p);
            }
            // Replay a packet B sent, maybe with one bit flipped.
            3 => {
                let pick = take(2);
                if let ([i, bit], false) = (pick, captured.is_empty()) {
                    let mut p = captured[usize::from(*i) % captured.len()].clone();
                    if *bit & 0x80 != 0 && !p.is_empty() {
                        let at = usize::from(*bit) % p.len();
                        p[at] ^= 1 << (*bit % 8);
                    }
                    a.handle(now, pb, &p);
                }
            }
            // Time passes.
            4 => {
                let ms = take(1).first().map_or(1, |&m| u64::from(m) * 4);
                now += Duration::from_millis(ms);
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
            // B restarts (a new incarnation, the same key), and sends again.
            _ => {
                if restarts < 4 {
                    restarts += 1;
                    if let Ok(fresh) = Endpoint::new(cfg.clone(), 22 + restarts, 2 + restarts) {
                        b = fresh;
                        let _ = b.send(now, pa, 0, Bytes::from_static(b"from b"));
                    }
                }
            }
        }
        while let Some(m) = a.poll_message() {
            if &m.data[..] != b"from b" {
                panic!("A took a message B never sent: {:?}", &m.data[..]);
            }
            taken += 1;
        }
        while b.poll_message().is_some() {}
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
    }
    taken
}

/// Decodes `data` as a messaging envelope (request, response, one-way, relay, cancel).
pub fn rpc_envelope(data: &[u8]) {
    let _ = crate::rpc::wire::decode(Bytes::copy_from_slice(data));
}

/// Parses `data` as a Redis change notification (`epoch\nseq\ntag\nop\nid\nrecord`) and
/// the node record it carries.
pub fn redis_notification(data: &[u8]) {
    crate::discovery::redis::fuzz_notification(data);
}

/// Decodes `data` as a seeds-discovery message.
pub fn seeds_message(data: &[u8]) {
    let _ = crate::discovery::seeds::decode(data);
}

/// Parses `data` as a node record, as Redis and seeds discovery read them.
pub fn node_record(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<crate::NodeRecord>(data) {
        let _ = serde_json::to_vec(&r);
    }
}

/// A recursive type with the shapes user types have (options, sequences, maps, enums,
/// strings, bytes).
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
enum Shape {
    Unit,
    Num(u64, i32, f64),
    Text(String),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Opt(Option<Box<Shape>>),
    Seq(Vec<Shape>),
    Map(std::collections::BTreeMap<String, Shape>),
    Pair { left: Box<Shape>, right: Box<Shape> },
}

/// Decodes `data` with the message codec into a recursive type (the nesting limit, the
/// length checks).
pub fn codec_value(data: &[u8]) {
    let _ = crate::codec::decode::<Shape>(data);
    let _ = crate::codec::decode::<(u16, String, Vec<u32>)>(data);
}

#[cfg(test)]
mod script {
    /// The handshake harness reaches the states it is for: deliveries open the session and
    /// carry B's message, also after B restarts; forged packets in between change nothing.
    #[test]
    fn the_handshake_script_opens_sessions_and_delivers() {
        assert_eq!(super::handshake_script(&[0, 0, 0]), 1);
        // Restart B, deliver: B's new incarnation gets through too.
        assert_eq!(super::handshake_script(&[0, 0, 5, 0, 0, 0]), 2);
        // Forged Data and Reset under the live session id, then delivery still works.
        let script = [0, 0, 2, 2, 0x10, 4, 1, 2, 3, 4, 2, 3, 0x10, 0, 5, 0, 0];
        assert_eq!(super::handshake_script(&script), 2);
    }
}

#[cfg(test)]
mod corpus {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::rpc::wire::{RelayHeader, RequestHeader, Status};

    /// Writes the seed corpus of the fuzz targets (`cargo test -p mesh-core --lib
    /// write_seed_corpus -- --ignored`): valid inputs of each format, for the fuzzer to
    /// mutate and for `tests/fuzz_corpus.rs` to replay.
    #[test]
    #[ignore = "writes files; run by hand to refresh the seed corpus"]
    fn write_seed_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        // Datagram bodies: a data packet's payload (packet number, frames).
        let mut frames = Vec::new();
        wire::varint::put(&mut frames, 0);
        wire::Frame::Ping.encode(&mut frames);
        write("datagram", "ping", &frames);
        let mut stream = Vec::new();
        wire::varint::put(&mut stream, 1);
        let mut msg = Vec::new();
        wire::varint::put(&mut msg, 5);
        msg.extend_from_slice(b"hello");
        wire::Frame::Stream {
            channel: 0,
            offset: 0,
            data: &msg,
        }
        .encode(&mut stream);
        wire::Frame::MaxData {
            channel: 1,
            max: 1 << 20,
        }
        .encode(&mut stream);
        write("datagram", "stream", &stream);
        let mut big = Vec::new();
        wire::varint::put(&mut big, 2);
        let mut first = Vec::new();
        wire::varint::put(&mut first, 1 << 22);
        first.resize(900, 7);
        wire::Frame::Stream {
            channel: 2,
            offset: 0,
            data: &first,
        }
        .encode(&mut big);
        wire::Frame::Datagram(b"d").encode(&mut big);
        write("datagram", "large_first_fragment", &big);
        let mut hello = Vec::new();
        HelloBody {
            incarnation: 8,
            echo: 5,
            fresh: true,
            cookie: Some([1; 16]),
        }
        .encode(&mut hello);
        write("datagram", "hello_body", &hello);
        // Envelopes.
        let trace = crate::rpc::TraceContext {
            trace_id: 1,
            parent_id: 2,
            flags: 1,
        };
        let req = RequestHeader {
            cmd: 1000,
            id: 7,
            deadline_ms: 500,
            fingerprint: 9,
            trace,
        };
        write(
            "rpc_envelope",
            "request",
            &crate::rpc::wire::request(&req, b"\x03abc"),
        );
        write(
            "rpc_envelope",
            "response",
            &crate::rpc::wire::response(7, Status::Ok, b"\x01"),
        );
        write(
            "rpc_envelope",
            "oneway",
            &crate::rpc::wire::oneway(5, 0, b"x"),
        );
        write("rpc_envelope", "cancel", &crate::rpc::wire::cancel(7));
        let rh = RelayHeader {
            cmd: 9,
            fingerprint: 0,
            limit: 2,
            reliable: true,
            origin: peer(),
        };
        let targets = [peer(), SocketAddr::from(([127, 0, 0, 2], 9))];
        write(
            "rpc_envelope",
            "relay",
            &crate::rpc::wire::relay(&rh, &targets, b"p"),
        );
        // Discovery.
        let rec = crate::NodeRecord::new(crate::NodeId::new(peer(), 5), "game");
        let json = serde_json::to_vec(&rec).unwrap();
        write("node_record", "record", &json);
        let mut seeds = vec![0x5d, 1];
        seeds.extend_from_slice(
            format!(
                r#"{{"View":{{"nodes":[[{},12]]}}}}"#,
                String::from_utf8_lossy(&json)
            )
            .as_bytes(),
        );
        write("seeds_message", "view", &seeds);
        let mut leave = vec![0x5d, 1];
        leave.extend_from_slice(br#"{"Leave":{"id":"127.0.0.1:4000#0000000000000005"}}"#);
        write("seeds_message", "leave", &leave);
        // Values: Seq([Text("a"), Opt(Some(Num(1, -1, 0.5)))]) and a tuple.
        write(
            "codec_value",
            "nested",
            &[
                5, 2, 2, 1, b'a', 4, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f,
            ],
        );
        write(
            "codec_value",
            "tuple",
            &crate::codec::encode(&(7u16, "x".to_string(), vec![1u32, 2])).unwrap(),
        );
    }
}
