//! `mesh-bench security`: a node under a flood of handshake-opening datagrams (100,000
//! `Hello`s from 10,000 source ports, loopback only), while a legitimate client keeps
//! calling it and new legitimate nodes keep opening sessions to it. Prints the server's
//! resident memory growth over idle and the share of legitimate calls that succeeded.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_core::rpc::Client;

use crate::stats::median;

const ROLES: &[&str] = &["sec-flood", "sec-legit"];
/// Hellos sent from each source socket.
const PER_PORT: usize = 10;
/// Source sockets (ports) in all.
const PORTS: usize = 10_000;
/// Sockets open at once (below the file-descriptor limit).
const BATCH: usize = 1000;

/// Whether `r` names a security role.
pub(crate) fn is_role(r: &str) -> bool {
    ROLES.contains(&r)
}

/// Runs role `r` against the server port given last.
pub(crate) fn run(r: &str, args: &[&str]) {
    let Some((rt, server)) = crate::role_setup(args) else {
        return;
    };
    match r {
        "sec-flood" => flood(server),
        "sec-legit" => rt.block_on(legit(server)),
        _ => {}
    }
}

/// A wire-version-2 `Hello` with no cookie, as a node of cluster "default" opens a session.
fn hello(session: u64, incarnation: u64) -> [u8; 33] {
    let mut p = [0u8; 33];
    p[0..2].copy_from_slice(b"MS");
    p[2] = 2;
    p[3] = 1;
    p[4..8].copy_from_slice(&mesh_core::rudp::cluster_id("default").to_be_bytes());
    p[8..16].copy_from_slice(&session.to_be_bytes());
    p[16..24].copy_from_slice(&incarnation.to_be_bytes());
    p
}

/// Sends the flood; prints the datagrams sent, the distinct source ports and the seconds
/// it took.
fn flood(server: SocketAddr) {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut ports = HashSet::new();
    let mut n = 0u64;
    // Distinct ports, a batch open at a time; a port in use is skipped.
    let mut next_port: u32 = 30_000;
    while ports.len() < PORTS && next_port < 65_000 {
        let mut socks = Vec::with_capacity(BATCH);
        while socks.len() < BATCH.min(PORTS - ports.len()) && next_port < 65_000 {
            if let Ok(s) = UdpSocket::bind(("127.0.0.1", next_port as u16)) {
                socks.push(s);
            }
            next_port += 1;
        }
        for _ in 0..PER_PORT {
            // Paced at about 100,000 datagrams/s, so that the server's socket buffer, not
            // the kernel, is what the flood fills.
            std::thread::sleep(Duration::from_millis(10));
            for s in &socks {
                n += 1;
                let p = hello(n, 0x5000_0000_0000_0000 | n);
                if s.send_to(&p, server).is_ok() {
                    sent += 1;
                }
            }
        }
        for s in &socks {
            if let Ok(a) = s.local_addr() {
                ports.insert(a.port());
            }
        }
    }
    println!(
        "{sent} {} {:.3}",
        ports.len(),
        start.elapsed().as_secs_f64()
    );
}

/// Calls the server until told to stop (stdin closes, or 20 s): one long-lived node making
/// calls back to back, and every 50 ms a new node making its first call (a new session
/// under the flood). Prints calls attempted and succeeded.
async fn legit(server: SocketAddr) {
    let Ok(m) = crate::rpc::bench_mesh().await else {
        println!("nan");
        return;
    };
    let client = Client::for_node(server).on(&m);
    let msg = Bytes::from_static(&[7u8; 32]);
    let (mut tried, mut ok) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(20);
    let stop = std::path::PathBuf::from(format!("/tmp/mesh-bench-sec-stop.{}", server.port()));
    let mut fresh_at = Instant::now();
    println!("ready");
    while Instant::now() < end && !stop.exists() {
        tried += 1;
        let r: Result<Bytes, _> = client.call(crate::rpc::ECHO, &msg).await;
        ok += u64::from(r.is_ok());
        if fresh_at.elapsed() >= Duration::from_millis(50) {
            fresh_at = Instant::now();
            tried += 1;
            if let Ok(n) = crate::rpc::bench_mesh().await {
                let r: Result<Bytes, _> = Client::for_node(server)
                    .on(&n)
                    .call(crate::rpc::ECHO, &msg)
                    .await;
                ok += u64::from(r.is_ok());
                n.stop().await;
            }
        }
    }
    let seen: Result<(u64, u64, u64), _> = client.call(crate::rpc::STATS, &()).await;
    let (inn, unproven, unauth) = seen.unwrap_or((0, 0, 0));
    println!("{tried} {ok} {inn} {unproven} {unauth}");
    m.stop().await;
}

/// The resident set of process `pid`, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The benchmark: `rounds` floods against a fresh unkeyed server, then as many against a
/// keyed one (with a keyed legitimate client).
pub(crate) fn bench(rounds: usize) {
    let plain = one_kind(rounds, false);
    let keyed = crate::keyed(|| one_kind(rounds, true));
    println!(
        "# security benchmark: {rounds} rounds each, medians; a flood of {} handshake-opening datagrams (Hellos without a cookie) from {PORTS} distinct source ports, while a client calls back to back and a new node opens a session every 50 ms (server cpu 0, flood and legitimate client cpu 1)",
        PORTS * PER_PORT
    );
    for (tag, r) in [("flood", plain), ("auth.flood", keyed)] {
        println!("security.{tag}.datagrams_per_s: {:.0} datagrams/s", r.rate);
        println!("security.{tag}.source_ports: {:.0} ports", r.ports);
        println!(
            "security.{tag}.refused_by_server: {:.0} datagrams (flood Hellos the server received and refused)",
            r.received
        );
        println!("security.{tag}.legit_calls: {:.0} calls", r.calls);
        println!(
            "security.{tag}.rss_growth_mib: {:.1} MiB (target <= 64)",
            r.growth
        );
        println!(
            "security.{tag}.legit_ok_ratio: {:.4} ratio (target >= 0.99)",
            r.ok
        );
    }
}

/// Medians of one kind of round.
struct Figures {
    rate: f64,
    ports: f64,
    calls: f64,
    growth: f64,
    ok: f64,
    received: f64,
}

fn one_kind(rounds: usize, keyed: bool) -> Figures {
    let mut growth = Vec::new();
    let mut port_counts = Vec::new();
    let mut received = Vec::new();
    let mut ratio = Vec::new();
    let mut rates = Vec::new();
    let mut legit_calls = Vec::new();
    for round in 0..rounds {
        eprintln!(
            "round {}/{rounds}{}",
            round + 1,
            if keyed { " (keyed)" } else { "" }
        );
        let mut srv = crate::spawn(Some(0), &["rpc-echo"]);
        let port = srv.line();
        let Some(pid) = srv.pid() else {
            continue;
        };
        let stop = format!("/tmp/mesh-bench-sec-stop.{port}");
        let _ = std::fs::remove_file(&stop);
        let mut legit = crate::spawn(Some(1), &["sec-legit", &port]);
        if legit.line() != "ready" {
            eprintln!("legitimate client did not start");
            continue;
        }
        // Idle: the server with one live session, after a moment of calls.
        std::thread::sleep(Duration::from_millis(300));
        let idle = rss_mib(pid).unwrap_or(f64::NAN);
        let mut fl = crate::spawn(Some(1), &["sec-flood", &port]);
        let mut peak = idle;
        let sampler_end = Instant::now() + Duration::from_secs(15);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(fl.line());
        });
        let flood_line = loop {
            if let Some(r) = rss_mib(pid) {
                peak = peak.max(r);
            }
            if let Ok(l) = rx.try_recv() {
                break l;
            }
            if Instant::now() > sampler_end {
                break String::new();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // A second more of legitimate calls after the flood, memory still sampled.
        let after = Instant::now() + Duration::from_secs(1);
        while Instant::now() < after {
            if let Some(r) = rss_mib(pid) {
                peak = peak.max(r);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::write(&stop, b"");
        let line = legit.line();
        let _ = std::fs::remove_file(&stop);
        let f: Vec<f64> = flood_line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let l: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let (Some(sent), Some(ports), Some(secs)) = (f.first(), f.get(1), f.get(2)) {
            eprintln!("flood: {sent} datagrams from {ports} ports in {secs:.2} s");
            rates.push(sent / secs);
            port_counts.push(*ports);
        }
        if let (Some(inn), Some(unproven), Some(unauth)) = (l.get(2), l.get(3), l.get(4)) {
            eprintln!(
                "server: {inn} datagrams in, {unproven} unproven hellos answered statelessly, {unauth} unauthenticated packets dropped"
            );
            received.push(unproven + unauth);
        }
        if let (Some(t), Some(o)) = (l.first(), l.get(1))
            && *t > 0.0
        {
            ratio.push(o / t);
            legit_calls.push(*t);
        }
        growth.push(peak - idle);
    }
    Figures {
        rate: median(&rates),
        ports: median(&port_counts),
        calls: median(&legit_calls),
        growth: median(&growth),
        ok: median(&ratio),
        received: median(&received),
    }
}
