//! Workspace-level integration tests live in `tests/`; this library holds their shared helpers.

pub mod mesh;
pub mod node;
pub mod redis;
