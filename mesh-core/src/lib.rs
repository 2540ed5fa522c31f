//! # mesh-core
//!
//! The runtime of a server-to-server mesh: processes in one private network find each other
//! (through Redis, a static seed list, or an in-process registry) and exchange messages over a
//! reliable-UDP transport.
//!
//! The crate is layered; each layer is a module with one job:
//!
//! * [`codec`]: serde + postcard behind a small [`codec::Codec`] seam.
//! * [`rudp`]: the reliable-UDP protocol as a sans-IO state machine (no sockets, no clocks).
//! * [`transport`]: the tokio driver around [`rudp`]: one UDP socket per node.
//!
//! ```
//! use mesh_core::codec::{Codec, Postcard};
//!
//! let bytes = Postcard.encode(&("hello", 42u32)).unwrap();
//! let back: (String, u32) = Postcard.decode(&bytes).unwrap();
//! assert_eq!(back, ("hello".to_string(), 42));
//! ```

pub mod codec;
pub mod rudp;
pub mod transport;
