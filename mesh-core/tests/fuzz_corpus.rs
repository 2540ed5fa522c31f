//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`: the seed inputs and every input the
//! fuzzer found worth keeping, crashes once fixed included) through the same entry points
//! the fuzz targets call: none may panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(missing_docs)]

use std::path::Path;

use mesh_core::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        run(&bytes);
        // Every prefix too: truncation is the commonest corruption.
        for cut in 0..bytes.len().min(64) {
            run(&bytes[..cut]);
        }
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
}

/// Every corpus input of every target runs without a panic.
#[test]
fn the_fuzz_corpus_replays_without_a_panic() {
    replay("datagram", fuzzing::datagram);
    replay("rpc_envelope", fuzzing::rpc_envelope);
    replay("seeds_message", fuzzing::seeds_message);
    replay("node_record", fuzzing::node_record);
    replay("codec_value", fuzzing::codec_value);
    replay("handshake", fuzzing::handshake);
    replay("redis_notification", fuzzing::redis_notification);
}
