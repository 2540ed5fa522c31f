//! Benchmarks: `cargo run --release -p mesh-bench -- transport|rpc|shared|security [rounds]`.
//!
//! The parent process orchestrates; every measurement runs between a server process and a
//! client process (this binary re-executed with a role), pinned with `taskset`: "same" = both
//! on CPU 0, "cross" = server on CPU 0, client on CPU 1. Baselines run in the same rounds,
//! interleaved; each ratio is the median of per-round ratios. Loopback only; every loop is
//! bounded in count and time.

mod alloc;
mod discovery;
mod roles;
mod rpc;
mod security;
mod shared;
mod stats;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use stats::median;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// A child process that is killed when dropped.
struct Proc(Child, BufReader<std::process::ChildStdout>);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        Some(self.0.id())
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        let _ = self.1.read_line(&mut s);
        s.trim().to_string()
    }
}

/// Whether the children spawned now run with the bench's cluster key.
static AUTH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The cluster key of the keyed runs, when this child is one (`MESH_BENCH_AUTH=1`). A fixed
/// key: both processes must hold the same one, and it guards nothing but a benchmark.
pub(crate) fn bench_key() -> Option<mesh_core::ClusterKey> {
    (std::env::var("MESH_BENCH_AUTH").as_deref() == Ok("1"))
        .then(|| mesh_core::ClusterKey::from_bytes([0x42; 32]))
}

/// Whether the children spawned now run with metrics on (a Prometheus recorder and the
/// sampler, `MESH_BENCH_METRICS=1`).
static METRICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this child runs with metrics on.
pub(crate) fn bench_metrics() -> bool {
    std::env::var("MESH_BENCH_METRICS").as_deref() == Ok("1")
}

/// Runs `f` with metrics on in the processes it spawns.
fn metered<T>(f: impl FnOnce() -> T) -> T {
    METRICS.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = f();
    METRICS.store(false, std::sync::atomic::Ordering::Relaxed);
    out
}

/// Runs `measure` with the cluster key on in both processes.
fn keyed<T>(f: impl FnOnce() -> T) -> T {
    AUTH.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = f();
    AUTH.store(false, std::sync::atomic::Ordering::Relaxed);
    out
}

fn spawn(cpu: Option<u32>, args: &[&str]) -> Proc {
    let exe = std::env::current_exe().unwrap_or_else(|_| "mesh-bench".into());
    let mut cmd = match cpu {
        Some(c) => {
            let mut c2 = Command::new("taskset");
            c2.arg("-c").arg(c.to_string()).arg(&exe);
            c2
        }
        None => Command::new(&exe),
    };
    if AUTH.load(std::sync::atomic::Ordering::Relaxed) {
        cmd.env("MESH_BENCH_AUTH", "1");
    } else {
        cmd.env_remove("MESH_BENCH_AUTH");
    }
    if METRICS.load(std::sync::atomic::Ordering::Relaxed) {
        cmd.env("MESH_BENCH_METRICS", "1");
    } else {
        cmd.env_remove("MESH_BENCH_METRICS");
    }
    let mut child = match cmd
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot spawn {args:?}: {e}");
            std::process::exit(2);
        }
    };
    let Some(out) = child.stdout.take() else {
        eprintln!("no stdout from child");
        std::process::exit(2);
    };
    Proc(child, BufReader::new(out))
}

/// Runs `server` (prints its port) and `client` (gets the port, prints one result line).
fn measure(server: &[&str], client: &[&str], cpus: (u32, u32), via_proxy: Option<f64>) -> Vec<f64> {
    let mut srv = spawn(Some(cpus.0), server);
    let port = srv.line();
    let mut _proxy = None;
    let target = match via_proxy {
        Some(loss) => {
            let mut p = spawn(None, &["proxy", &loss.to_string(), &port]);
            let pport = p.line();
            _proxy = Some(p);
            pport
        }
        None => port,
    };
    let mut args: Vec<&str> = client.to_vec();
    args.push(&target);
    let mut cl = spawn(Some(cpus.1), &args);
    let line = cl.line();
    let mut out: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if out.is_empty() {
        eprintln!("client {client:?} printed {line:?}");
    }
    // A server that reports (sinks) prints after the client is done.
    if server.first().is_some_and(|s| s.ends_with("sink")) {
        out.extend(
            srv.line()
                .split_whitespace()
                .filter_map(|x| x.parse::<f64>().ok()),
        );
    }
    out
}

/// What every role starts with: a single-threaded runtime, and the server's loopback address
/// (its port is the last argument; 0 for a server role).
fn role_setup(args: &[&str]) -> Option<(tokio::runtime::Runtime, std::net::SocketAddr)> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return None;
        }
    };
    let port = args.last().and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    Some((rt, std::net::SocketAddr::from(([127, 0, 0, 1], port))))
}

const SAME: (u32, u32) = (0, 0);
const CROSS: (u32, u32) = (0, 1);

fn transport(rounds: usize) {
    let mut r: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut push = |k: &'static str, v: Option<&f64>| {
        if let Some(v) = v {
            r.entry(k).or_default().push(*v);
        }
    };
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (cpus, tag) in [(SAME, "same"), (CROSS, "cross")] {
            let u = measure(&["udp-echo"], &["udp-rtt"], cpus, None);
            let m = measure(&["mesh-echo"], &["mesh-rtt", "0"], cpus, None);
            if tag == "same" {
                push("udp.rtt.p50.same", u.first());
                push("udp.rtt.p99.same", u.get(1));
                push("transport.rtt.p50.same", m.first());
                push("transport.rtt.p99.same", m.get(1));
            } else {
                push("udp.rtt.p50.cross", u.first());
                push("udp.rtt.p99.cross", u.get(1));
                push("transport.rtt.p50.cross", m.first());
                push("transport.rtt.p99.cross", m.get(1));
                let b = measure(&["mesh-echo"], &["mesh-rtt", "1"], cpus, None);
                push("transport.rtt.p50.during_bulk", b.first());
                if let (Some(x), Some(y)) = (b.first(), m.first()) {
                    push("ratio.during_bulk", Some(&(x / y)));
                }
            }
            if let (Some(x), Some(y)) = (m.first(), u.first()) {
                push(
                    if tag == "same" {
                        "overhead.rtt.same"
                    } else {
                        "overhead.rtt.cross"
                    },
                    Some(&(x - y)),
                );
                push(
                    if tag == "same" {
                        "ratio.rtt.same"
                    } else {
                        "ratio.rtt.cross"
                    },
                    Some(&(x / y)),
                );
            }
        }
        let uf = measure(&["udp-sink"], &["udp-flood"], CROSS, None);
        let mf = measure(&["mesh-sink"], &["mesh-flood"], CROSS, None);
        // udp-flood client prints nothing useful; the sink prints msgs/s.
        push("udp.msgs_per_s", uf.last());
        push("transport.msgs_per_s", mf.get(1));
        push("transport.datagrams_per_msg", mf.first());
        if let (Some(x), Some(y)) = (mf.get(1), uf.last()) {
            push("ratio.msgs", Some(&(x / y)));
        }
        let t = measure(&["tcp-sink"], &["tcp-10mb"], CROSS, None);
        let m = measure(&["mesh-sink"], &["mesh-10mb"], CROSS, None);
        let k = keyed(|| measure(&["mesh-sink"], &["mesh-10mb"], CROSS, None));
        push("tcp.10mb.oneway.ms", t.first());
        push("transport.10mb.ms", m.first());
        push("transport.auth.10mb.ms", k.first());
        if let (Some(x), Some(y)) = (m.first(), t.first()) {
            push("ratio.10mb", Some(&(x / y)));
        }
        if let (Some(x), Some(y)) = (k.first(), m.first()) {
            push("ratio.auth.10mb", Some(&(x / y)));
        }
        let p0 = measure(&["mesh-sink"], &["mesh-10mb"], CROSS, Some(0.0));
        let p5 = measure(&["mesh-sink"], &["mesh-10mb"], CROSS, Some(0.05));
        push("transport.10mb.proxy.ms", p0.first());
        push("transport.10mb.proxy.loss5.ms", p5.first());
        if let (Some(x), Some(y)) = (p5.first(), p0.first()) {
            push("ratio.loss5", Some(&(x / y)));
        }
    }
    let med = |k: &str| median(r.get(k).map(Vec::as_slice).unwrap_or(&[]));
    // The spread of the per-round values: (min, max).
    let spread = |k: &str| {
        let v = r.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    };
    println!(
        "# transport benchmark: {rounds} rounds, medians [min..max of the rounds]; rtt in us, 32-byte payloads"
    );
    println!("# same = both processes on cpu 0; cross = server cpu 0, client cpu 1");
    for (k, unit) in [
        ("udp.rtt.p50.same", "us"),
        ("udp.rtt.p99.same", "us"),
        ("udp.rtt.p50.cross", "us"),
        ("udp.rtt.p99.cross", "us"),
        ("udp.msgs_per_s", "msg/s"),
        ("tcp.10mb.oneway.ms", "ms"),
        ("transport.rtt.p50.same", "us"),
        ("transport.rtt.p99.same", "us"),
        ("transport.rtt.p50.cross", "us"),
        ("transport.rtt.p99.cross", "us"),
        ("transport.rtt.p50.during_bulk", "us"),
        ("transport.msgs_per_s", "msg/s"),
        ("transport.datagrams_per_msg", "datagrams"),
        ("transport.10mb.ms", "ms"),
        ("transport.auth.10mb.ms", "ms"),
        ("transport.10mb.proxy.ms", "ms"),
        ("transport.10mb.proxy.loss5.ms", "ms"),
    ] {
        let (lo, hi) = spread(k);
        println!("{k}: {:.2} {unit} [{lo:.2}..{hi:.2}]", med(k));
    }
    for (k, name, target) in [
        ("overhead.rtt.same", "transport.rtt.overhead_us", "<= 1.5"),
        ("overhead.rtt.cross", "transport.rtt.overhead_us.cross", "-"),
    ] {
        let (lo, hi) = spread(k);
        println!(
            "{name}: {:.2} us [{lo:.2}..{hi:.2}] (transport p50 - raw UDP p50, same run; target {target})",
            med(k)
        );
    }
    for (k, name, target) in [
        ("ratio.rtt.same", "transport.rtt.p50.same.ratio", "<= 1.2"),
        ("ratio.rtt.cross", "transport.rtt.p50.cross.ratio", "<= 1.2"),
        (
            "ratio.during_bulk",
            "transport.rtt.p50.during_bulk.ratio",
            "<= 1.5",
        ),
        ("ratio.msgs", "transport.msgs_per_s.ratio", ">= 15"),
        ("ratio.10mb", "transport.10mb.ratio", "<= 3"),
        ("ratio.loss5", "transport.10mb.loss5.ratio", "<= 2"),
        ("ratio.auth.10mb", "transport.auth.10mb.ratio", "<= 1.3"),
    ] {
        let (lo, hi) = spread(k);
        println!(
            "{name}: {:.3} ratio [{lo:.3}..{hi:.3}] (target {target})",
            med(k)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["transport"] => transport(9),
        ["transport", n] => transport(n.parse().unwrap_or(9)),
        ["rpc"] => rpc::bench(9),
        ["rpc-metrics"] => rpc::bench_metrics(9),
        ["rpc-metrics", n] => rpc::bench_metrics(n.parse().unwrap_or(9)),
        ["rpc", n] => rpc::bench(n.parse().unwrap_or(9)),
        ["security"] => security::bench(3),
        ["security", n] => security::bench(n.parse().unwrap_or(3)),
        ["shared"] => shared::bench(5),
        ["shared", n] => shared::bench(n.parse().unwrap_or(5)),
        ["discovery", rest @ ..] => discovery::run(rest),
        [role, rest @ ..] if roles::is_role(role) => roles::run(role, rest),
        [role, rest @ ..] if rpc::is_role(role) => rpc::run(role, rest),
        [role, rest @ ..] if shared::is_role(role) => shared::run(role, rest),
        [role, rest @ ..] if security::is_role(role) => security::run(role, rest),
        _ => {
            eprintln!(
                "usage: mesh-bench transport|rpc|shared|security [rounds] | discovery [kills]"
            );
            std::process::exit(2);
        }
    }
}
