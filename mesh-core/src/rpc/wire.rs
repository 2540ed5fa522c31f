//! The envelope every mesh message travels in (inside one transport message), encoded and
//! decoded without panics.
//!
//! ```text
//! REQUEST   01 | cmd u16 | id u64 | deadline_ms u32 | fingerprint u32
//!              | trace_id u128 | parent_id u64 | trace_flags u8 | payload
//! RESPONSE  02 | id u64 | status u8 | payload
//! ONEWAY    03 | cmd u16 | fingerprint u32 | payload
//! CANCEL    04 | id u64
//! RELAY     05 | cmd u16 | fingerprint u32 | limit u16 | reliable u8 | n u16 | n addrs | payload
//! PING      06
//! ```
//! Integers are little-endian; an address is `4 | ip[4] | port u16` or `6 | ip[16] | port u16`.
//!
//! Some refusals carry a typed detail in the response payload: `INCOMPATIBLE` the called
//! node's fingerprint, the caller's, then `service len u8 | service | method`; `CODEC` the
//! stage (u8) then the codec's message; `TOO_LARGE` the size and the limit (u64 each).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::CodecStage;
use super::scope::TraceContext;

/// Response status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    /// The handler's value.
    Ok = 0,
    /// The handler's own (typed) error.
    Remote = 1,
    /// No handler for the command.
    NoHandler = 2,
    /// Past the node's concurrency limit; not run.
    Overloaded = 3,
    /// The handler panicked (payload: the message).
    Panicked = 4,
    /// The request's fingerprint does not match the handler's; not run.
    Incompatible = 5,
    /// The request could not be decoded as the handler's type; not run.
    Codec = 6,
    /// The deadline passed before the handler ran; not run.
    Expired = 7,
    /// The node is shutting down; not run.
    ShuttingDown = 8,
    /// The response was larger than the node's limit.
    TooLarge = 9,
    /// The node's access schema does not let the caller run the command; not run.
    Forbidden = 10,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Remote,
            2 => Status::NoHandler,
            3 => Status::Overloaded,
            4 => Status::Panicked,
            5 => Status::Incompatible,
            6 => Status::Codec,
            7 => Status::Expired,
            8 => Status::ShuttingDown,
            9 => Status::TooLarge,
            10 => Status::Forbidden,
            _ => return None,
        })
    }
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Envelope {
    Request {
        header: RequestHeader,
        payload: Bytes,
    },
    Response {
        id: u64,
        status: Status,
        payload: Bytes,
    },
    OneWay {
        cmd: u16,
        fingerprint: u32,
        payload: Bytes,
    },
    Cancel {
        id: u64,
    },
    Relay {
        cmd: u16,
        fingerprint: u32,
        limit: u16,
        reliable: bool,
        /// The node that started the fan-out (as it says).
        origin: SocketAddr,
        targets: Vec<SocketAddr>,
        payload: Bytes,
    },
    Ping,
}

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const ONEWAY: u8 = 3;
const CANCEL: u8 = 4;
const RELAY: u8 = 5;
const PING: u8 = 6;

/// The most targets one relay message may carry.
pub(crate) const MAX_RELAY_TARGETS: usize = 4096;

/// Fixed bytes before a request's payload.
pub(crate) const REQUEST_HEADER: usize = 1 + 2 + 8 + 4 + 4 + 16 + 8 + 1;

/// What a request says before its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHeader {
    pub(crate) cmd: u16,
    pub(crate) id: u64,
    /// The caller's remaining deadline (0: already expired).
    pub(crate) deadline_ms: u32,
    pub(crate) fingerprint: u32,
    /// The caller's trace, with the id of the calling span.
    pub(crate) trace: TraceContext,
}

/// Why an envelope could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed mesh envelope: {0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

/// Fixed bytes before a one-way message's payload.
const ONEWAY_HEADER: usize = 1 + 2 + 4;

/// Fixed bytes before a response's payload.
pub(crate) const RESPONSE_HEADER: usize = 1 + 8 + 1;

/// A message body with room before it for the envelope header (the largest, a request's),
/// written in place when the body is sent: one buffer per message, and no copy.
#[derive(Debug, Clone)]
pub(crate) struct Body(BytesMut);

impl Body {
    /// Room kept before the payload.
    const HEADROOM: usize = REQUEST_HEADER;

    /// `value` encoded.
    pub(crate) fn encode<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Body, crate::codec::CodecError> {
        crate::codec::encode_after(Self::HEADROOM, value).map(Body)
    }

    /// A copy of an encoded `payload`.
    pub(crate) fn copy(payload: &[u8]) -> Body {
        let mut b = BytesMut::with_capacity(Self::HEADROOM + payload.len());
        b.put_bytes(0, Self::HEADROOM);
        b.put_slice(payload);
        Body(b)
    }

    /// The payload alone (for a handler in this process).
    pub(crate) fn into_payload(self) -> Bytes {
        let mut b = self.0.freeze();
        b.advance(Self::HEADROOM);
        b
    }

    /// The body as a request envelope.
    pub(crate) fn into_request(self, h: &RequestHeader) -> Bytes {
        self.behind(REQUEST_HEADER, |mut head| put_request_header(&mut head, h))
    }

    /// The body as a one-way envelope.
    pub(crate) fn into_oneway(self, cmd: u16, fingerprint: u32) -> Bytes {
        self.behind(ONEWAY_HEADER, |mut head| {
            put_oneway_header(&mut head, cmd, fingerprint);
        })
    }

    /// The body as a response envelope.
    pub(crate) fn into_response(self, id: u64, status: Status) -> Bytes {
        self.behind(RESPONSE_HEADER, |mut head| {
            put_response_header(&mut head, id, status);
        })
    }

    /// The body behind a header of `len` bytes that `write` fills.
    fn behind(mut self, len: usize, write: impl FnOnce(&mut [u8])) -> Bytes {
        let skip = Self::HEADROOM - len;
        write(&mut self.0[skip..Self::HEADROOM]);
        let mut b = self.0.freeze();
        b.advance(skip);
        b
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];

    /// The payload.
    fn deref(&self) -> &[u8] {
        &self.0[Self::HEADROOM..]
    }
}

/// The encoded payload of a reply: bytes as given, or a [`Body`] the response envelope is
/// written around in place.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Plain(Bytes),
    Body(Body),
}

impl Payload {
    /// The payload alone.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            Payload::Plain(b) => b,
            Payload::Body(b) => b.into_payload(),
        }
    }

    /// The payload in a response envelope.
    pub(crate) fn into_response(self, id: u64, status: Status) -> Bytes {
        match self {
            Payload::Plain(b) => response(id, status, &b),
            Payload::Body(b) => b.into_response(id, status),
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Payload {
        Payload::Plain(b)
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Plain(b) => b,
            Payload::Body(b) => b,
        }
    }
}

/// A request envelope around `payload` (a copy).
#[cfg(test)]
pub(crate) fn request(h: &RequestHeader, payload: &[u8]) -> Bytes {
    Body::copy(payload).into_request(h)
}

/// The detail of an `Incompatible` refusal: the method there and both fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) sent: u32,
    pub(crate) served: u32,
}

impl Mismatch {
    pub(crate) fn encode(&self) -> Bytes {
        let service = truncate(&self.service, 255);
        let method = truncate(&self.method, 255);
        let mut b = BytesMut::with_capacity(9 + service.len() + method.len());
        b.put_u32_le(self.served);
        b.put_u32_le(self.sent);
        b.put_u8(service.len() as u8);
        b.put_slice(service.as_bytes());
        b.put_slice(method.as_bytes());
        b.freeze()
    }

    pub(crate) fn decode(mut b: &[u8]) -> Option<Mismatch> {
        if b.len() < 9 {
            return None;
        }
        let served = b.get_u32_le();
        let sent = b.get_u32_le();
        let n = usize::from(b.get_u8());
        let service = std::str::from_utf8(b.get(..n)?).ok()?.to_string();
        let method = std::str::from_utf8(b.get(n..)?).ok()?.to_string();
        Some(Mismatch {
            service,
            method,
            sent,
            served,
        })
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The detail of a `Codec` refusal: where, and what the codec said.
pub(crate) fn codec_detail(stage: CodecStage, message: &str) -> Bytes {
    let message = truncate(message, 1024);
    let mut b = BytesMut::with_capacity(1 + message.len());
    b.put_u8(stage.to_u8());
    b.put_slice(message.as_bytes());
    b.freeze()
}

pub(crate) fn decode_codec_detail(b: &[u8]) -> Option<(CodecStage, String)> {
    let (&stage, rest) = b.split_first()?;
    Some((
        CodecStage::from_u8(stage)?,
        String::from_utf8_lossy(rest).into_owned(),
    ))
}

/// The detail of a `TooLarge` refusal: the size and the limit.
pub(crate) fn too_large_detail(size: u64, max: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_u64_le(size);
    b.put_u64_le(max);
    b.freeze()
}

pub(crate) fn decode_too_large(mut b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 16 {
        return None;
    }
    Some((b.get_u64_le(), b.get_u64_le()))
}

fn put_request_header(b: &mut impl BufMut, h: &RequestHeader) {
    b.put_u8(REQUEST);
    b.put_u16_le(h.cmd);
    b.put_u64_le(h.id);
    b.put_u32_le(h.deadline_ms);
    b.put_u32_le(h.fingerprint);
    b.put_u128_le(h.trace.trace_id);
    b.put_u64_le(h.trace.parent_id);
    b.put_u8(h.trace.flags);
}

fn put_response_header(b: &mut impl BufMut, id: u64, status: Status) {
    b.put_u8(RESPONSE);
    b.put_u64_le(id);
    b.put_u8(status as u8);
}

fn put_oneway_header(b: &mut impl BufMut, cmd: u16, fingerprint: u32) {
    b.put_u8(ONEWAY);
    b.put_u16_le(cmd);
    b.put_u32_le(fingerprint);
}

pub(crate) fn response(id: u64, status: Status, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(RESPONSE_HEADER + payload.len());
    put_response_header(&mut b, id, status);
    b.put_slice(payload);
    b.freeze()
}

pub(crate) fn oneway(cmd: u16, fingerprint: u32, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(ONEWAY_HEADER + payload.len());
    put_oneway_header(&mut b, cmd, fingerprint);
    b.put_slice(payload);
    b.freeze()
}

pub(crate) fn cancel(id: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(CANCEL);
    b.put_u64_le(id);
    b.freeze()
}

pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[PING])
}

fn put_addr(b: &mut BytesMut, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            b.put_u8(4);
            b.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b.put_u8(6);
            b.put_slice(&ip.octets());
        }
    }
    b.put_u16_le(a.port());
}

fn addr_len(a: &SocketAddr) -> usize {
    if a.is_ipv4() { 7 } else { 19 }
}

/// What every hop of one fan-out shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RelayHeader {
    pub(crate) cmd: u16,
    pub(crate) fingerprint: u32,
    /// Next hops per node.
    pub(crate) limit: u16,
    pub(crate) reliable: bool,
    /// The node that started the fan-out: handlers see it as the sender.
    pub(crate) origin: SocketAddr,
}

pub(crate) fn relay(h: &RelayHeader, targets: &[SocketAddr], payload: &[u8]) -> Bytes {
    let addrs: usize = targets.iter().map(addr_len).sum();
    let mut b = BytesMut::with_capacity(12 + addr_len(&h.origin) + addrs + payload.len());
    b.put_u8(RELAY);
    b.put_u16_le(h.cmd);
    b.put_u32_le(h.fingerprint);
    b.put_u16_le(h.limit);
    b.put_u8(u8::from(h.reliable));
    put_addr(&mut b, &h.origin);
    b.put_u16_le(u16::try_from(targets.len()).unwrap_or(u16::MAX));
    for a in targets.iter().take(usize::from(u16::MAX)) {
        put_addr(&mut b, a);
    }
    b.put_slice(payload);
    b.freeze()
}

/// The encoded size of a relay envelope (to check it against a datagram's room).
pub(crate) fn relay_len(origin: &SocketAddr, targets: &[SocketAddr], payload: usize) -> usize {
    12 + addr_len(origin) + targets.iter().map(addr_len).sum::<usize>() + payload
}

fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), Malformed> {
    if buf.remaining() < n {
        Err(Malformed(what))
    } else {
        Ok(())
    }
}

fn get_addr(buf: &mut Bytes) -> Result<SocketAddr, Malformed> {
    need(buf, 1, "address family")?;
    let ip = match buf.get_u8() {
        4 => {
            need(buf, 6, "IPv4 address")?;
            let mut o = [0u8; 4];
            buf.copy_to_slice(&mut o);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        6 => {
            need(buf, 18, "IPv6 address")?;
            let mut o = [0u8; 16];
            buf.copy_to_slice(&mut o);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(Malformed("address family")),
    };
    Ok(SocketAddr::new(ip, buf.get_u16_le()))
}

/// Decodes an envelope; the payload shares the input's memory.
pub(crate) fn decode(mut buf: Bytes) -> Result<Envelope, Malformed> {
    need(&buf, 1, "empty message")?;
    match buf.get_u8() {
        REQUEST => {
            need(&buf, REQUEST_HEADER - 1, "request header")?;
            let header = RequestHeader {
                cmd: buf.get_u16_le(),
                id: buf.get_u64_le(),
                deadline_ms: buf.get_u32_le(),
                fingerprint: buf.get_u32_le(),
                trace: TraceContext {
                    trace_id: buf.get_u128_le(),
                    parent_id: buf.get_u64_le(),
                    flags: buf.get_u8(),
                },
            };
            Ok(Envelope::Request {
                header,
                payload: buf,
            })
        }
        RESPONSE => {
            need(&buf, 9, "response header")?;
            let id = buf.get_u64_le();
            let status = Status::from_u8(buf.get_u8()).ok_or(Malformed("response status"))?;
            Ok(Envelope::Response {
                id,
                status,
                payload: buf,
            })
        }
        ONEWAY => {
            need(&buf, 6, "one-way header")?;
            Ok(Envelope::OneWay {
                cmd: buf.get_u16_le(),
                fingerprint: buf.get_u32_le(),
                payload: buf,
            })
        }
        CANCEL => {
            need(&buf, 8, "cancel")?;
            Ok(Envelope::Cancel {
                id: buf.get_u64_le(),
            })
        }
        RELAY => {
            need(&buf, 9, "relay header")?;
            let cmd = buf.get_u16_le();
            let fingerprint = buf.get_u32_le();
            let limit = buf.get_u16_le();
            let reliable = buf.get_u8() != 0;
            let origin = get_addr(&mut buf)?;
            need(&buf, 2, "relay target count")?;
            let n = usize::from(buf.get_u16_le());
            if n > MAX_RELAY_TARGETS {
                return Err(Malformed("too many relay targets"));
            }
            let mut targets = Vec::with_capacity(n.min(buf.remaining() / 7));
            for _ in 0..n {
                targets.push(get_addr(&mut buf)?);
            }
            Ok(Envelope::Relay {
                cmd,
                fingerprint,
                limit,
                reliable,
                origin,
                targets,
                payload: buf,
            })
        }
        PING => Ok(Envelope::Ping),
        _ => Err(Malformed("unknown kind")),
    }
}

/// A 32-bit FNV-1a hash, for fingerprints (usable in constants).
pub const fn fingerprint(text: &str) -> u32 {
    let b = text.as_bytes();
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    // Zero means "not checked": never produce it.
    if h == 0 { 1 } else { h }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let p = b"payload";
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let b6: SocketAddr = "[::1]:10".parse().unwrap();
        let rh = RelayHeader {
            cmd: 5,
            fingerprint: 1,
            limit: 2,
            reliable: true,
            origin: b6,
        };
        let header = RequestHeader {
            cmd: 1000,
            id: 7,
            deadline_ms: 3000,
            fingerprint: 99,
            trace: TraceContext {
                trace_id: 0x0af7651916cd43dd8448eb211c80319c,
                parent_id: 0xb7ad6b7169203331,
                flags: 1,
            },
        };
        let cases = [
            (
                request(&header, p),
                Envelope::Request {
                    header,
                    payload: Bytes::from_static(p),
                },
            ),
            (
                response(7, Status::Remote, p),
                Envelope::Response {
                    id: 7,
                    status: Status::Remote,
                    payload: Bytes::from_static(p),
                },
            ),
            (
                oneway(5, 0, p),
                Envelope::OneWay {
                    cmd: 5,
                    fingerprint: 0,
                    payload: Bytes::from_static(p),
                },
            ),
            (cancel(3), Envelope::Cancel { id: 3 }),
            (
                relay(&rh, &[a, b6], p),
                Envelope::Relay {
                    cmd: 5,
                    fingerprint: 1,
                    limit: 2,
                    reliable: true,
                    origin: b6,
                    targets: vec![a, b6],
                    payload: Bytes::from_static(p),
                },
            ),
            (ping(), Envelope::Ping),
        ];
        for (bytes, env) in cases {
            assert_eq!(decode(bytes.clone()), Ok(env));
            // Every truncation is an error or a shorter payload, never a panic.
            for n in 0..bytes.len() {
                let _ = decode(bytes.slice(..n));
            }
        }
        assert_eq!(relay_len(&b6, &[a, b6], 7), relay(&rh, &[a, b6], p).len());
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }

    #[test]
    fn bodies_written_in_place_equal_the_copied_envelopes() {
        let header = RequestHeader {
            cmd: 1001,
            id: u64::MAX - 3,
            deadline_ms: 1,
            fingerprint: 0xdead_beef,
            trace: TraceContext {
                trace_id: 1,
                parent_id: 2,
                flags: 0,
            },
        };
        for len in [0usize, 1, 300, 70_000] {
            let value = Bytes::from(vec![0xa5u8; len]);
            let encoded = crate::codec::encode(&value).expect("encodes");
            let body = Body::encode(&value).expect("encodes");
            assert_eq!(&body[..], &encoded[..]);
            assert_eq!(body.clone().into_payload(), encoded);
            assert_eq!(
                body.clone().into_request(&header),
                request(&header, &encoded)
            );
            assert_eq!(body.clone().into_oneway(9, 4), oneway(9, 4, &encoded));
            assert_eq!(
                body.clone().into_response(5, Status::Ok),
                response(5, Status::Ok, &encoded)
            );
            let copied = Body::copy(&encoded);
            assert_eq!(copied.into_request(&header), request(&header, &encoded));
            let reply = Payload::Body(body);
            assert_eq!(&reply[..], &encoded[..]);
            assert_eq!(
                reply.into_response(6, Status::Remote),
                Payload::Plain(encoded.clone()).into_response(6, Status::Remote)
            );
        }
    }

    #[test]
    fn refusal_details_round_trip_and_reject_garbage() {
        let m = Mismatch {
            service: "Greeter".into(),
            method: "hello".into(),
            sent: 7,
            served: 9,
        };
        assert_eq!(Mismatch::decode(&m.encode()), Some(m));
        assert_eq!(Mismatch::decode(&[1, 2, 3]), None);
        assert_eq!(Mismatch::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 200]), None);
        let long = Mismatch {
            service: "é".repeat(300),
            method: String::new(),
            sent: 1,
            served: 2,
        };
        let back = Mismatch::decode(&long.encode()).map(|m| m.service.len());
        assert_eq!(back, Some(254));
        let c = codec_detail(CodecStage::EncodeResponse, "boom");
        assert_eq!(
            decode_codec_detail(&c),
            Some((CodecStage::EncodeResponse, "boom".to_string()))
        );
        assert_eq!(decode_codec_detail(&[9, b'x']), None);
        assert_eq!(decode_codec_detail(&[]), None);
        assert_eq!(decode_too_large(&too_large_detail(5, 4)), Some((5, 4)));
        assert_eq!(decode_too_large(b"5:4"), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(Bytes::from(data));
        }
    }
}
