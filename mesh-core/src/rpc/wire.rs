//! The envelope every mesh message travels in (inside one transport message), encoded and
//! decoded without panics.
//!
//! ```text
//! REQUEST   01 | cmd u16 | id u64 | deadline_ms u32 | fingerprint u32 | payload
//! RESPONSE  02 | id u64 | status u8 | payload
//! ONEWAY    03 | cmd u16 | fingerprint u32 | payload
//! CANCEL    04 | id u64
//! RELAY     05 | cmd u16 | fingerprint u32 | limit u16 | reliable u8 | n u16 | n addrs | payload
//! PING      06
//! ```
//! Integers are little-endian; an address is `4 | ip[4] | port u16` or `6 | ip[16] | port u16`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};

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
            _ => return None,
        })
    }
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Envelope {
    Request {
        cmd: u16,
        id: u64,
        deadline_ms: u32,
        fingerprint: u32,
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
pub(crate) const REQUEST_HEADER: usize = 1 + 2 + 8 + 4 + 4;

/// Why an envelope could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed mesh envelope: {0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

pub(crate) fn request(
    cmd: u16,
    id: u64,
    deadline_ms: u32,
    fingerprint: u32,
    payload: &[u8],
) -> Bytes {
    let mut b = BytesMut::with_capacity(REQUEST_HEADER + payload.len());
    b.put_u8(REQUEST);
    b.put_u16_le(cmd);
    b.put_u64_le(id);
    b.put_u32_le(deadline_ms);
    b.put_u32_le(fingerprint);
    b.put_slice(payload);
    b.freeze()
}

pub(crate) fn response(id: u64, status: Status, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(10 + payload.len());
    b.put_u8(RESPONSE);
    b.put_u64_le(id);
    b.put_u8(status as u8);
    b.put_slice(payload);
    b.freeze()
}

pub(crate) fn oneway(cmd: u16, fingerprint: u32, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(7 + payload.len());
    b.put_u8(ONEWAY);
    b.put_u16_le(cmd);
    b.put_u32_le(fingerprint);
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
            Ok(Envelope::Request {
                cmd: buf.get_u16_le(),
                id: buf.get_u64_le(),
                deadline_ms: buf.get_u32_le(),
                fingerprint: buf.get_u32_le(),
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
        let cases = [
            (
                request(1000, 7, 3000, 99, p),
                Envelope::Request {
                    cmd: 1000,
                    id: 7,
                    deadline_ms: 3000,
                    fingerprint: 99,
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

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(Bytes::from(data));
        }
    }
}
