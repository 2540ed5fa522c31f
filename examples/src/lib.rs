//! Runnable examples: see `examples/`.
//!
//! This library holds what the examples that start other processes share ([`procs`]):
//! children that die with their parent, and `redis-server`s on free loopback ports.

pub mod procs;
