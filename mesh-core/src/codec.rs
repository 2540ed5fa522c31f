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

use bytes::Bytes;
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

/// Encodes `value` with postcard into a fresh buffer.
///
/// Every message body of the mesh goes through this function and [`decode`]: this is the
/// one place the wire encoding of values is chosen.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    // Most messages are small: one allocation instead of several doublings from empty.
    postcard::to_extend(value, Vec::with_capacity(128))
        .map(Bytes::from)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value of type `T` from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError::Decode(e.to_string()))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(CodecError::Decode(format!(
            "{} unexpected trailing bytes",
            rest.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
