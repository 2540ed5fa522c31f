//! Serialization of message bodies: serde + postcard, through [`encode`] and [`decode`].
//!
//! postcard is compact (varints, no field names) and maintained; bincode is not used because
//! its last crates.io release is a `compile_error!` and the crate is unmaintained.
//!
//! Byte vectors: serde sees a `Vec<u8>` as a sequence and visits it byte by byte, some 3 to 4
//! times slower than the same bytes as [`bytes::Bytes`]. `#[mesh_service]` carries every
//! argument and return value written `Vec<u8>` as bytes for you (same wire format, so nodes
//! built either way talk to each other). Inside your own types, mark such fields
//! `#[serde(with = "mesh_core::codec::serde_bytes")]` (or use `Bytes`) for the same speed.

mod depth;

use std::any::Any;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

/// The [`serde_bytes`](https://docs.rs/serde_bytes) crate, for `#[serde(with = ...)]` on byte
/// vector fields of your own types.
pub use serde_bytes;

/// A `Vec<u8>` that serde encodes as bytes: what the code `#[mesh_service]` generates sends in
/// place of a `Vec<u8>` argument or return value. Its encoding equals the `Vec<u8>`'s.
#[doc(hidden)]
pub type ByteVec = serde_bytes::ByteBuf;

/// An error of encoding or decoding a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded (a serde `Serialize` implementation failed).
    #[error("could not encode the value: {0}")]
    Encode(String),
    /// The bytes do not hold a value of the expected type: the peer sent another type, another
    /// version of the type, or corrupt data.
    #[error("could not decode the bytes as the expected type: {0}")]
    Decode(String),
}

/// Encodings up to this size are built on the stack (see [`encode`]).
const SMALL_ENCODE: usize = 256;

/// Encodes `value` with postcard into a fresh buffer.
///
/// Every message body of the mesh goes through this function and [`decode`]: this is the
/// one place the wire encoding of values is chosen.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    // An exact-size buffer becomes `Bytes` without another allocation.
    encode_after(0, value).map(BytesMut::freeze)
}

/// Encodes `value` after `headroom` zero bytes, where the caller writes an envelope header in
/// place: one buffer for the whole message.
pub(crate) fn encode_after<T: Serialize + ?Sized>(
    headroom: usize,
    value: &T,
) -> Result<BytesMut, CodecError> {
    // Most messages are small: written on the stack first, then copied into one buffer of
    // exactly their size (one allocation; a `Vec` with spare capacity would take a second
    // one to become `Bytes`).
    let mut small = [0u8; SMALL_ENCODE];
    if let Ok(used) = postcard::to_slice(value, &mut small) {
        let mut out = BytesMut::with_capacity(headroom + used.len());
        out.put_bytes(0, headroom);
        out.extend_from_slice(used);
        return Ok(out);
    }
    // Too large, or an error. A full buffer does not always say so (a `collect_str` that
    // runs out of room reports a formatting error), so any failure is tried again on a
    // heap buffer, which reports the real error if there is one. The value is sized first
    // (cheap: a byte string counts as its length), so a large one is written once into a
    // buffer of its size instead of into one that grows and copies itself.
    let size = postcard::experimental::serialized_size(value).unwrap_or(4 * SMALL_ENCODE);
    let mut out = Vec::with_capacity(headroom + size);
    out.resize(headroom, 0);
    postcard::to_extend(value, out)
        .map(|v| BytesMut::from(Bytes::from(v)))
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// The largest message a decoded [`Bytes`] is a view of; larger ones are copied. A view pins
/// the whole received buffer, and while a large one is pinned the allocations that follow
/// (typically the response) cannot reuse its memory and take fresh pages: measured on a
/// 10 MB echo, the view cost 7,500 more page faults on the server and about 4 ms more than
/// the copy it saved.
const VIEW_MAX: usize = 1 << 20;

/// Decodes a value of type `T` from `bytes` like [`decode`], without a copy when `T` is
/// [`Bytes`] and the message is at most [`VIEW_MAX`]: the value then shares `bytes`' buffer.
pub(crate) fn decode_shared<T: DeserializeOwned + 'static>(bytes: Bytes) -> Result<T, CodecError> {
    let mut value: Option<T> = None;
    match (&mut value as &mut dyn Any).downcast_mut::<Option<Bytes>>() {
        Some(out) if bytes.len() <= VIEW_MAX => *out = Some(bytes_within(bytes)?),
        _ => return decode(&bytes),
    }
    value.ok_or_else(|| CodecError::Decode("no value".into()))
}

/// The bytes a postcard-encoded byte string holds, as a view of the same buffer.
fn bytes_within(mut bytes: Bytes) -> Result<Bytes, CodecError> {
    let (inner, rest) = postcard::take_from_bytes::<&[u8]>(&bytes)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(trailing(rest.len()));
    }
    let len = inner.len();
    bytes.advance(bytes.len() - len);
    Ok(bytes)
}

fn trailing(n: usize) -> CodecError {
    CodecError::Decode(format!("{n} unexpected trailing bytes"))
}

/// Decodes a value of type `T` from `bytes`; trailing bytes are an error, and so is a value
/// nested more than 128 levels deep (a recursive type sent deeply nested would otherwise
/// exhaust the stack).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let bad = |e: postcard::Error| CodecError::Decode(e.to_string());
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let depth = depth::Depth::default();
    let value = T::deserialize(depth::Limited {
        de: &mut de,
        depth: &depth,
    })
    .map_err(|e| {
        if depth.exceeded() {
            CodecError::Decode(depth::TOO_DEEP.into())
        } else {
            bad(e)
        }
    })?;
    let rest = de.finalize().map_err(bad)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(trailing(rest.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_encodings_agree_at_the_stack_buffer_edge() {
        // Around the size where `encode` switches from the stack buffer to a growing one.
        for len in [
            0,
            1,
            SMALL_ENCODE - 3,
            SMALL_ENCODE - 2,
            SMALL_ENCODE - 1,
            SMALL_ENCODE,
            4096,
        ] {
            let value: Vec<u16> = (0..len as u16).collect();
            let b = encode(&value).expect("encodes");
            let plain = postcard::to_allocvec(&value).expect("encodes");
            assert_eq!(b.as_ref(), plain.as_slice(), "length {len}");
            assert_eq!(decode::<Vec<u16>>(&b).expect("decodes"), value);
        }
    }

    #[test]
    fn headroom_comes_first_and_the_encoding_after_it() {
        for len in [0usize, 10, SMALL_ENCODE, 5000] {
            let value = Bytes::from(vec![3u8; len]);
            let b = encode_after(37, &value).expect("encodes");
            assert!(b[..37].iter().all(|&x| x == 0));
            assert_eq!(
                &b[37..],
                encode(&value).expect("encodes").as_ref(),
                "length {len}"
            );
        }
    }

    #[test]
    fn shared_decoding_of_bytes_views_the_same_buffer() {
        for len in [0usize, 1, 127, 128, 70_000, VIEW_MAX + 1] {
            let value = Bytes::from(vec![5u8; len]);
            let wire = encode(&value).expect("encodes");
            let start = wire.as_ptr() as usize;
            let back: Bytes = decode_shared(wire.clone()).expect("decodes");
            assert_eq!(back, value);
            // A view starts inside the encoded buffer, after the length prefix; a copy does not.
            let inside = (start..start + wire.len()).contains(&(back.as_ptr() as usize));
            assert_eq!(inside, len > 0 && len < VIEW_MAX, "length {len}");
            let mut longer = wire.to_vec();
            longer.push(1);
            assert!(decode_shared::<Bytes>(Bytes::from(longer)).is_err());
        }
        // Any other type decodes as `decode` does.
        let wire = encode(&(7u32, "x")).expect("encodes");
        let v: (u32, String) = decode_shared(wire).expect("decodes");
        assert_eq!(v, (7, "x".to_string()));
        assert!(decode_shared::<Bytes>(Bytes::from_static(&[0x05, 1])).is_err());
    }

    /// Serialized through `collect_str`, as types with a `Display` form often are.
    struct Shown(String);
    impl Serialize for Shown {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&self.0)
        }
    }

    #[test]
    fn a_collected_string_too_large_for_the_stack_buffer_still_encodes() {
        // Running out of room inside `collect_str` is reported as a formatting error, not
        // as a full buffer: `encode` must still fall back to a growing buffer.
        let long = "n".repeat(3 * SMALL_ENCODE);
        let b = encode(&vec![Shown(long.clone())]).expect("encodes");
        assert_eq!(decode::<Vec<String>>(&b).expect("decodes"), vec![long]);
    }

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
        Pair(Vec<Tree>),
    }

    /// Security finding 17: a value nested a million levels deep is refused instead of
    /// overflowing the stack (this test aborted the test process before the limit).
    #[test]
    fn deep_nesting_is_refused_and_shallow_nesting_decodes() {
        // Node(Node(...(Leaf))): variant 1 repeated, then variant 0.
        let mut deep = vec![1u8; 1_000_000];
        deep.push(0);
        let e = decode::<Tree>(&deep).expect_err("refused");
        assert!(e.to_string().contains("nests more than 128"), "{e}");
        // Pair([Pair([...])]): variant 2, length 1, repeated.
        let deep_seq: Vec<u8> = std::iter::repeat_n([2u8, 1], 500_000)
            .flatten()
            .chain([0])
            .collect();
        assert!(decode::<Tree>(&deep_seq).is_err());
        let mut ok = vec![1u8; depth::MAX_DEPTH - 1];
        ok.push(0);
        let mut t = decode::<Tree>(&ok).expect("decodes");
        let mut levels = 0;
        while let Tree::Node(inner) = t {
            t = *inner;
            levels += 1;
        }
        assert_eq!(levels, depth::MAX_DEPTH - 1);
        // Ordinary values are unaffected.
        let v = (
            Some(vec![Some(1u8)]),
            [[1u16; 3]; 2],
            Tree::Pair(vec![Tree::Leaf]),
        );
        assert_eq!(
            decode::<(Option<Vec<Option<u8>>>, [[u16; 3]; 2], Tree)>(&encode(&v).expect("encodes"))
                .expect("decodes"),
            v
        );
    }

    #[test]
    fn round_trip_and_trailing_bytes() {
        let b = encode(&(1u8, "x")).unwrap_or_default();
        let v: (u8, String) = decode(&b).unwrap_or_default();
        assert_eq!(v, (1, "x".to_string()));
        let mut longer = b.to_vec();
        longer.push(0);
        assert!(decode::<(u8, String)>(&longer).is_err());
        assert!(decode::<u64>(&[0xff]).is_err());
    }

    #[test]
    fn byte_vec_encodes_as_a_vec_u8_does() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let as_seq = encode(&(v.clone(), 5u16)).unwrap_or_default();
            let as_bytes = encode(&(ByteVec::from(v.clone()), 5u16)).unwrap_or_default();
            assert_eq!(as_seq, as_bytes, "length {len}");
            let back: (ByteVec, u16) = decode(&as_seq).unwrap_or_default();
            assert_eq!(back.0.into_vec(), v);
            let old: (Vec<u8>, u16) = decode(&as_bytes).unwrap_or_default();
            assert_eq!(old.0, v);
        }
    }
}
