//! # mesh-core
//!
//! The runtime of a server-to-server mesh: processes in one private network find each other
//! (through Redis, a static seed list, or an in-process registry) and call each other over a
//! reliable-UDP transport, with no HTTP in between.
//!
//! The crate is layered; each layer is a module with one job:
//!
//! * [`codec`]: serde + postcard: the one place message bodies are encoded.
//! * [`rudp`]: the reliable-UDP protocol as a sans-IO state machine (no sockets, no clocks).
//! * [`transport`]: the tokio driver around [`rudp`]: one UDP socket per node.
//! * [`discovery`]: backends (local, Redis, seeds), the membership view and its events.
//! * [`rpc`]: messaging on u16 command ids: handlers, requests, one-way, fan-out.
//! * [`shared`]: shared objects (`#[derive(SharedObject)]`), owned by one node, replicated.
//! * [`Mesh`]: the handle that wires these together, with its builder and [`config`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_core::rpc::{handler, CallContext, Client};
//! use mesh_core::{Discovery, LocalRegistry, Mesh};
//!
//! let registry = LocalRegistry::new(); // an in-process discovery registry
//! let a = Mesh::builder().node_type("math").discovery(Discovery::local_registry(&registry)).start().await?;
//! let b = Mesh::builder().node_type("web").discovery(Discovery::local_registry(&registry)).start().await?;
//!
//! // Command 1000 on node a: add two numbers.
//! let _serving = a.handle(1000, handler(|_ctx: CallContext, (x, y): (i64, i64)| async move { x + y }))?;
//!
//! // Node b sees a and calls it.
//! assert_eq!(b.nodes_by_type("math").len(), 1);
//! let sum: i64 = Client::for_node(a.id()).on(&b).call(1000, &(2i64, 3i64)).await?;
//! assert_eq!(sum, 5);
//! b.stop().await;
//! a.stop().await;
//! # Ok(()) }
//! ```

//!
//! # Security: the threat model
//!
//! Nodes trust a private network less than their operators do: a compromised box, a
//! misconfigured service or a port scan must not drive the cluster.
//!
//! **Always, with or without a key**, a sender of datagrams cannot:
//! * make a node keep state before it proves it receives at its source address: a first
//!   `Hello` gets a stateless cookie (`Retry`, never larger than the `Hello`), so spoofed
//!   sources allocate nothing, and half-open sessions are reclaimed under pressure;
//! * take more than its share: sessions, large-message memory and refusals are capped per IP
//!   address and in total, a large message that stops arriving loses its memory to a peer
//!   that waits for some, every table fed from the network has a bound, and each refusal is
//!   counted by reason ([`rudp::DropCounters`]);
//! * crash a node with malformed input (fuzzed: the datagram path, envelopes, discovery
//!   records, the codec; nesting depth is bounded), or make a relay amplify a message.
//!
//! **Without a cluster key** (the quickstart; the node logs a warning once at start) an
//! attacker that can both send from a member's address and receive there (on the path
//! between nodes) can open sessions as that member, inject calls, read every payload and end
//! sessions. One that is off the path sees no session ids and gets no cookies, so it can do
//! none of that to existing sessions. The access schema ([`rpc::AccessSchema`]) then trusts
//! the caller's address.
//!
//! **With a cluster key** ([`ClusterKey`]: `MeshBuilder::cluster_key`, `cluster_key` in the
//! config file, `MESH_CLUSTER_KEY`), every packet is authenticated and every data packet
//! encrypted: the handshake is Noise `NNpsk0` (X25519, AES-256-GCM, BLAKE2s, through
//! the `snow` crate), each session gets its own keys, and data packets are sealed with
//! AES-256-GCM (`ring`) under their packet number, which is never reused and is refused once
//! received (the replay window). An attacker without the key, on the path or not, cannot
//! join, inject, replay, read payloads, or end or disturb a session; its packets are dropped
//! after one MAC check and counted (`unauthenticated`, `bad_auth`). It can still see who
//! talks to whom, how much and when, and drop or delay packets. Recorded traffic stays
//! secret if the key leaks later (the session keys come from ephemeral Diffie-Hellman); an
//! attacker who holds the key is a member. Keys rotate on a live cluster
//! ([`Mesh::install_key`], [`Mesh::use_key`], [`Mesh::remove_key`]) with no failed call.
//!
//! With a key, discovery is authenticated too: node records in Redis carry a MAC under it
//! (a record written without the key, or altered, is refused and counted in
//! `RedisStats::forged_records`), seed views travel only over authenticated sessions, and
//! so do relayed messages: a relay's origin is what a member says. Replaying a member's
//! genuine old record is not prevented (it names an incarnation that no longer answers).

// Lets `#[mesh_service]` (which names `::mesh_core`) be used inside this crate too.
#[allow(unused_extern_crates)]
extern crate self as mesh_core;

pub mod codec;
pub mod config;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
mod mesh;
pub mod metrics;
pub mod node;
pub mod rpc;
pub mod rudp;
pub mod shared;
pub mod shared_data;
#[cfg(feature = "opentelemetry")]
pub mod telemetry;
pub mod transport;

pub use config::MeshConfig;
pub use discovery::{Discovery, Health, LeaveReason, LocalRegistry, MeshEvent};
pub use mesh::watch;
pub use mesh::{
    Mesh, MeshBuilder, MeshError, MeshStats, PeerStats, Serving, ValueError, WatchEvent,
};
pub use node::{NodeId, NodeRecord, NodeStatus, Target, Value};
pub use rpc::{CallContext, CallError};
pub use rudp::{ClusterKey, KeyError, KeyId, Keyring};

/// Turns a trait of `async fn`s into a mesh service: a typed client, a broadcast handle and a
/// server. See the [`mesh_macros`] crate for the tutorial.
pub use mesh_macros::mesh_service;

/// Makes a struct a shared object type: field ids, the typed handle (`RoomHandle` for
/// `Room`) and batch (`RoomBatch`). See [`shared`].
pub use mesh_macros::SharedObject;
/// The trait the derive implements (same name, like serde's `Serialize`): bound generic code
/// on it.
pub use shared::SharedObject;

/// What most code using the mesh needs: `use mesh_core::prelude::*;`.
///
/// `Serialize` and `Deserialize` are serde's (the derives also need `serde` among your
/// dependencies).
///
/// ```
/// use mesh_core::prelude::*;
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// pub enum MathError { DivByZero }
///
/// #[mesh_service(id = 1000)]
/// pub trait Greeter {
///     async fn hello(&self, name: String) -> String;
///     async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
/// }
///
/// struct MyGreeter;
/// impl Greeter for MyGreeter {
///     async fn hello(&self, name: String) -> String { format!("hello, {name}") }
///     async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
///         a.checked_div(b).ok_or(MathError::DivByZero)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = LocalRegistry::new();
/// let mesh = Mesh::builder().node_type("math").discovery(Discovery::local_registry(&registry)).start().await?;
/// let _serving = mesh.serve(GreeterServer::new(MyGreeter))?;
/// // The only mesh running in the process is the default one (`.on(&mesh)` also works).
/// let q = GreeterClient::for_node(mesh.id()).divide(1, 0).await;
/// assert_eq!(q, Err(CallError::Remote(MathError::DivByZero)));
/// # mesh.stop().await;
/// # Ok(()) }
/// ```
pub mod prelude {
    pub use serde::{Deserialize, Serialize};

    pub use crate::SharedObject;
    pub use crate::mesh_service;
    pub use crate::node::{NodeId, NodeRecord, NodeStatus, Target};
    pub use crate::rpc::{CallContext, CallError};
    pub use crate::shared::{ObjectId, SharedError, SharedEvent};
    pub use crate::{Discovery, LocalRegistry, Mesh, MeshEvent};
}

/// The README's code blocks, compiled (and run where they can) as doctests, so the README
/// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
