//! Fuzz target: `mesh_core::fuzzing::redis_notification` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_core::fuzzing::redis_notification(data));
