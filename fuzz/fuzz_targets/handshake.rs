//! Fuzz target: `mesh_core::fuzzing::handshake`, a script of deliveries, losses, forged,
//! replayed and altered packets, time and restarts between two keyed endpoints.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_core::fuzzing::handshake(data));
