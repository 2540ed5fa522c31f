//! Round trips and malformed input for the wire format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::frames::{code, encode_ack_ranges};
use super::*;

#[test]
fn varint_round_trip() {
    for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
        let mut out = Vec::new();
        varint::put(&mut out, v);
        assert_eq!(out.len(), varint::len(v));
        let mut s = &out[..];
        assert_eq!(varint::get(&mut s), Some(v));
        assert!(s.is_empty());
        let (a, n) = varint::to_array(v);
        assert_eq!(&a[..n], &out[..]);
    }
    let mut over: &[u8] = &[0xff; 11];
    assert_eq!(varint::get(&mut over), None);
}

#[test]
fn frames_round_trip() {
    let frames = vec![
        Frame::Ack(AckFrame {
            delay_us: 17,
            ranges: vec![(10, 12), (5, 7), (0, 2)],
        }),
        Frame::Stream {
            channel: 1,
            offset: 99_999,
            data: b"hello",
        },
        Frame::MaxData {
            channel: 2,
            max: 1 << 40,
        },
        Frame::Datagram(b"x"),
        Frame::Ping,
        Frame::Refused {
            channel: 0,
            offset: 5,
            size: 6,
            max: 7,
        },
    ];
    let mut out = Vec::new();
    for f in &frames {
        f.encode(&mut out);
    }
    let back: Vec<_> = Frames::new(&out).collect::<Result<_, _>>().unwrap();
    assert_eq!(back, frames);
}

#[test]
fn ack_length_and_lazy_ranges() {
    for ranges in [
        vec![],
        vec![(3u64, 3u64)],
        vec![(10, 12), (5, 7), (0, 2)],
        vec![(1 << 40, (1 << 40) + 5), (200, 300), (0, 0)],
    ] {
        let mut out = Vec::new();
        out.push(code::ACK);
        encode_ack_ranges(1234, ranges.iter().copied(), &mut out);
        assert_eq!(out.len(), ack_frame_len(1234, ranges.iter().copied()));
        let f = RawFrames::new(&out).next().unwrap();
        if ranges.is_empty() {
            // An empty ACK is never sent, and is not a valid frame.
            assert!(f.is_err());
            continue;
        }
        if let Ok(RawFrame::Ack(a)) = f {
            assert_eq!(a.ranges().collect::<Vec<_>>(), ranges);
            assert_eq!(a.largest(), ranges[0].1);
            assert_eq!(a.delay_us, 1234);
        } else {
            panic!("not an ack: {f:?}");
        }
    }
    // More ranges than MAX_ACK_RANGES: the extra ones are read past, not returned.
    let many: Vec<(u64, u64)> = (0..100u64).rev().map(|i| (i * 3, i * 3)).collect();
    let mut out = vec![code::ACK];
    encode_ack_ranges(0, many.iter().copied(), &mut out);
    out.push(code::PING);
    let frames: Vec<_> = RawFrames::new(&out).collect::<Result<_, _>>().unwrap();
    assert_eq!(frames.len(), 2);
    if let RawFrame::Ack(a) = frames[0] {
        assert_eq!(a.ranges().count(), 1 + MAX_ACK_RANGES);
    }
}

#[test]
fn header_round_trip_and_foreign() {
    let h = Header {
        version: WIRE_VERSION,
        kind: Kind::Data,
        flags: 0,
        cluster: 0xdead_beef,
        session: 42,
    };
    let mut out = Vec::new();
    h.encode(&mut out);
    out.push(7);
    let (back, rest) = Header::decode(&out).unwrap();
    assert_eq!(back, h);
    assert_eq!(rest, &[7]);
    assert_eq!(
        Header::decode(b"GET / HTTP/1.1\r\n\r\n"),
        Err(HeaderError::Decode(DecodeError::Foreign))
    );
}

#[test]
fn truncated_frames_are_malformed() {
    let mut out = Vec::new();
    Frame::Stream {
        channel: 0,
        offset: 0,
        data: b"abcdef",
    }
    .encode(&mut out);
    for cut in 1..out.len() {
        let r: Result<Vec<_>, _> = Frames::new(&out[..cut]).collect();
        assert!(r.is_err(), "cut at {cut}");
    }
}

mod properties {
    //! Every encoding round-trips, and any bytes decode to a value or an error, never a
    //! panic.

    use proptest::prelude::*;

    use super::super::frames::Frames;
    use super::super::*;

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Hello),
            Just(Kind::HelloAck),
            Just(Kind::Data),
            Just(Kind::Reset),
            Just(Kind::Reject),
            Just(Kind::Retry),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn headers_round_trip(kind in kind(), cluster: u32, session: u64, flags in 0u8..16) {
            let h = Header { version: WIRE_VERSION, kind, flags: flags << 4, cluster, session };
            let mut out = Vec::new();
            h.encode(&mut out);
            out.extend_from_slice(b"body");
            let (back, body) = Header::decode(&out).unwrap();
            prop_assert_eq!(back, h);
            prop_assert_eq!(body, b"body");
        }

        #[test]
        fn hello_bodies_round_trip(
            incarnation in 1u64..,
            echo: u64,
            fresh: bool,
            cookie in proptest::option::of(any::<[u8; COOKIE_LEN]>()),
        ) {
            let b = HelloBody { incarnation, echo, fresh, cookie };
            let mut out = Vec::new();
            b.encode(&mut out);
            prop_assert_eq!(HelloBody::decode(&out).unwrap(), b);
            // Any other length is refused.
            out.push(0);
            prop_assert!(HelloBody::decode(&out).is_err());
        }

        #[test]
        fn keyed_hello_bodies_round_trip(
            noise in proptest::collection::vec(any::<u8>(), 0..256),
            incarnation in 1u64..,
            echo: u64,
            fresh: bool,
            cookie in proptest::option::of(any::<[u8; COOKIE_LEN]>()),
            session: u64,
        ) {
            let b = HelloBody { incarnation, echo, fresh, cookie };
            let mut out = Vec::new();
            encode_keyed(&noise, &b, &mut out);
            let (n, plain) = split_keyed(&out).unwrap();
            prop_assert_eq!(n, &noise[..]);
            prop_assert_eq!(HelloBody::decode(plain).unwrap(), b);
            // What the handshake authenticates: the session id and every field but the cookie.
            let auth = hello_auth(session, &b);
            prop_assert_eq!(auth, hello_auth(session, &HelloBody { cookie: None, ..b }));
            prop_assert_ne!(auth, hello_auth(session ^ 1, &b));
            prop_assert_ne!(auth, hello_auth(session, &HelloBody { fresh: !fresh, ..b }));
            // A truncated Noise message is refused.
            if !noise.is_empty() {
                prop_assert!(split_keyed(&out[..noise.len()]).is_err());
            }
        }

        #[test]
        fn rejects_round_trip(code in 0u8..5, v: u32, ours: u32) {
            let reason = match code {
                0 => RejectReason::OtherCluster { theirs: v, ours },
                1 => RejectReason::Version { theirs: v as u8, ours: WIRE_VERSION },
                2 => RejectReason::KeyRequired,
                3 => RejectReason::Unauthenticated,
                _ => RejectReason::Flags { flags: v as u8 },
            };
            let mut out = Vec::new();
            encode_reject(reason, &mut out);
            let back = decode_reject(&out, ours, WIRE_VERSION).unwrap();
            prop_assert_eq!(back, reason);
        }

        #[test]
        fn stream_frames_round_trip(
            channel in 0u8..16,
            offset in 0u64..(1 << 60),
            data in proptest::collection::vec(any::<u8>(), 0..1400),
            max: u64,
        ) {
            let frames = vec![
                Frame::Stream { channel, offset, data: &data },
                Frame::MaxData { channel, max },
                Frame::Datagram(&data),
            ];
            let mut out = Vec::new();
            for f in &frames {
                f.encode(&mut out);
            }
            let back: Vec<_> = Frames::new(&out).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back, frames);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::decode(&data);
            let _ = HelloBody::decode(&data);
            let _ = split_keyed(&data);
            let _ = decode_reject(&data, 1, WIRE_VERSION);
            for f in Frames::new(&data) {
                if f.is_err() {
                    break;
                }
            }
        }
    }
}
