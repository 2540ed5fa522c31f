//! Fuzz target: `mesh_core::fuzzing::rpc_envelope` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_core::fuzzing::rpc_envelope(data));
