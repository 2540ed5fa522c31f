//! Benchmarks: `cargo run --release -p mesh-bench -- <transport|discovery|rpc>`.

fn main() {
    println!("mesh-bench: no benchmark yet");
}
