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

/// Decodes `data` as a messaging envelope (request, response, one-way, relay, cancel).
pub fn rpc_envelope(data: &[u8]) {
    let _ = crate::rpc::wire::decode(Bytes::copy_from_slice(data));
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
