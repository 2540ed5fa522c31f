//! `mesh-bench rpc`: typed calls over the mesh against raw tokio UDP ping-pong, raw tokio
//! TCP and tarpc, in separate pinned processes, rounds interleaved.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mesh_core::rpc::{CallContext, Client, handler};
use mesh_core::{Mesh, MeshError};
use tarpc::server::Channel;
use tarpc::tokio_serde::formats::Bincode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::stats::{median, percentile};
use crate::{CROSS, SAME, measure};

const ROLES: &[&str] = &[
    "rpc-echo",
    "rpc-rtt",
    "rpc-tput",
    "rpc-10mb",
    "rpc-typed-echo",
    "rpc-10mb-vec",
    "rpc-10mb-bytes",
    "tarpc-echo",
    "tarpc-rtt",
    "tarpc-tput",
    "tcp-echo",
    "tcp-echo-10mb",
];
pub(crate) const ECHO: u16 = 1;
/// The server's transport counters: datagrams in, unproven hellos, unauthenticated packets.
pub(crate) const STATS: u16 = 2;
const WARMUP: usize = 200;
const ROUND_TRIPS: usize = 2000;
const IN_FLIGHT: usize = 64;
const TPUT_CALLS: usize = 100_000;

/// Calls per run: `default`, or `MESH_BENCH_CALLS` (a longer run to profile).
fn calls_or(default: usize) -> usize {
    std::env::var("MESH_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const TEN_MB: usize = 10 * 1024 * 1024;
const BIG_ROUNDS: usize = 5;
/// Every child exits on its own after this long.
const LIFETIME: Duration = Duration::from_secs(30);

type Res = Result<(), Box<dyn std::error::Error>>;

/// Whether `r` names an rpc role.
pub(crate) fn is_role(r: &str) -> bool {
    ROLES.contains(&r)
}

/// Runs role `r` on a single-threaded runtime (the server port is the last argument).
pub(crate) fn run(r: &str, args: &[&str]) {
    let Some((rt, server)) = crate::role_setup(args) else {
        return;
    };
    let role = r.to_string();
    rt.block_on(async move {
        let task = tokio::spawn(async move {
            let fut = async {
                match role.as_str() {
                    "rpc-echo" => rpc_echo().await,
                    "rpc-rtt" => rpc_rtt(server).await,
                    "rpc-tput" => rpc_tput(server).await,
                    "rpc-10mb" => rpc_10mb(server).await,
                    "rpc-typed-echo" => rpc_typed_echo().await,
                    "rpc-10mb-vec" => rpc_10mb_typed(server, true).await,
                    "rpc-10mb-bytes" => rpc_10mb_typed(server, false).await,
                    "tarpc-echo" => tarpc_echo().await,
                    "tarpc-rtt" => tarpc_rtt(server).await,
                    "tarpc-tput" => tarpc_tput(server).await,
                    "tcp-echo" => tcp_echo().await,
                    "tcp-echo-10mb" => tcp_echo_10mb(server).await,
                    _ => Ok(()),
                }
            };
            match tokio::time::timeout(LIFETIME, fut).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    eprintln!("{role}: {e}");
                    println!("nan");
                }
                Err(_) => println!("nan"),
            }
        });
        let _ = task.await;
    });
}

pub(crate) async fn bench_mesh() -> Result<Mesh, MeshError> {
    // The default configuration; each process has its own in-process registry, and calls
    // name the server by address.
    let mut b = Mesh::builder().node_type("bench");
    if crate::bench_metrics() {
        // A Prometheus recorder with its endpoint on an ephemeral loopback port, and the
        // sampler: what a node with metrics on pays.
        b = b.prometheus(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    match crate::bench_key() {
        // The processes do not list each other (each has its own registry): the keyed runs
        // measure the cryptography, not the membership check.
        Some(k) => b.cluster_key(k).strict_membership(false).start().await,
        None => b.start().await,
    }
}

async fn rpc_echo() -> Res {
    let m = bench_mesh().await?;
    let _echo = m.handle(ECHO, handler(|_c: CallContext, b: Bytes| async move { b }))?;
    // What the server's transport received and dropped (the security bench asks).
    let counts = m.clone();
    let _stats = m.handle(
        STATS,
        handler(move |_c: CallContext, _: ()| {
            let t = counts.stats().transport;
            async move {
                (
                    t.datagrams_in,
                    t.drops.unproven_hello,
                    t.drops.unauthenticated,
                )
            }
        }),
    )?;
    println!("{}", m.addr().port());
    std::future::pending::<()>().await;
    Ok(())
}

async fn rpc_rtt(server: SocketAddr) -> Res {
    let m = bench_mesh().await?;
    let msg = Bytes::from_static(&[7u8; 32]);
    let client = Client::for_node(server).on(&m);
    let trips = calls_or(ROUND_TRIPS);
    let mut samples = Vec::with_capacity(trips);
    for i in 0..WARMUP + trips {
        let t = Instant::now();
        let back: Bytes = client.call(ECHO, &msg).await?;
        if i >= WARMUP {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        if back.len() != 32 {
            return Err("bad echo".into());
        }
    }
    println!(
        "{:.2} {:.2}",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0)
    );
    Ok(())
}

/// Runs `calls` calls with `IN_FLIGHT` outstanding; prints calls/s and p99 latency (us).
async fn tput<F, Fut>(call: F) -> Res
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    // Warm up.
    for _ in 0..WARMUP {
        call().await?;
    }
    let calls = calls_or(TPUT_CALLS);
    let mut lat = Vec::with_capacity(calls);
    let start = Instant::now();
    let timed = |f: Fut| async move {
        let t = Instant::now();
        f.await.map(|()| t.elapsed())
    };
    let mut running = futures::stream::FuturesUnordered::new();
    let allocs_before = crate::alloc::allocations();
    let mut issued = 0;
    while issued < IN_FLIGHT {
        running.push(timed(call()));
        issued += 1;
    }
    while let Some(r) = running.next().await {
        lat.push(r?.as_secs_f64() * 1e6);
        if issued < calls {
            running.push(timed(call()));
            issued += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Every allocation of the client process while the calls ran (its runtime's threads
    // too), per call: the harness's own share (one task per call) is the same for both.
    let allocs = (crate::alloc::allocations() - allocs_before) as f64 / lat.len() as f64;
    println!(
        "{:.0} {:.2} {:.2}",
        lat.len() as f64 / secs,
        percentile(&lat, 99.0),
        allocs
    );
    Ok(())
}

async fn rpc_tput(server: SocketAddr) -> Res {
    let m = bench_mesh().await?;
    let msg = Bytes::from_static(&[7u8; 32]);
    let client = Client::for_node(server).on(&m);
    tput(|| {
        let client = client.clone();
        let msg = msg.clone();
        async move {
            let _: Bytes = client.call(ECHO, &msg).await?;
            Ok(())
        }
    })
    .await?;
    let c = m.stats().transport;
    eprintln!(
        "rpc-tput: {} messages, {} datagrams out, {} in, {} packets",
        c.messages_sent, c.datagrams_out, c.datagrams_in, c.packets_sent
    );
    Ok(())
}

async fn rpc_10mb(server: SocketAddr) -> Res {
    let m = bench_mesh().await?;
    let big = Bytes::from(vec![9u8; TEN_MB]);
    let client = Client::for_node(server)
        .on(&m)
        .with_timeout(Duration::from_secs(10));
    let _: Bytes = client.call(ECHO, &big).await?;
    let mut ms = Vec::new();
    for _ in 0..BIG_ROUNDS {
        let t = Instant::now();
        let back: Bytes = client.call(ECHO, &big).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if back.len() != TEN_MB {
            return Err("bad echo".into());
        }
    }
    println!("{:.3}", median(&ms));
    Ok(())
}

/// The same 10 MB echo through the generated client, once as `Vec<u8>` and once as `Bytes`.
#[mesh_core::mesh_service(id = 2000)]
trait BigEcho {
    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8>;
    async fn echo_bytes(&self, data: Bytes) -> Bytes;
}

struct BigEchoImpl;
impl BigEcho for BigEchoImpl {
    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn echo_bytes(&self, data: Bytes) -> Bytes {
        data
    }
}

async fn rpc_typed_echo() -> Res {
    let m = bench_mesh().await?;
    let _serving = m.serve(BigEchoServer::new(BigEchoImpl))?;
    println!("{}", m.addr().port());
    std::future::pending::<()>().await;
    Ok(())
}

/// Median ms of a 10 MB typed echo, as `Vec<u8>` (`vec`) or `Bytes`.
async fn rpc_10mb_typed(server: SocketAddr, vec: bool) -> Res {
    let m = bench_mesh().await?;
    let client = BigEchoClient::for_node(server)
        .on(&m)
        .with_timeout(Duration::from_secs(10));
    let mut ms = Vec::new();
    for i in 0..=BIG_ROUNDS {
        // A fresh value each call, as a caller would build it; not timed.
        let data = vec![9u8; TEN_MB];
        let t = Instant::now();
        let len = if vec {
            client.echo_vec(data).await?.len()
        } else {
            client.echo_bytes(Bytes::from(data)).await?.len()
        };
        if i > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if len != TEN_MB {
            return Err("bad echo".into());
        }
    }
    println!("{:.3}", median(&ms));
    Ok(())
}

#[tarpc::service]
trait EchoService {
    async fn echo(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct EchoServer;

impl EchoService for EchoServer {
    async fn echo(self, _: tarpc::context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

async fn tarpc_echo() -> Res {
    let listener = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default).await?;
    println!("{}", listener.local_addr().port());
    listener
        .filter_map(|r| async { r.ok() })
        .map(tarpc::server::BaseChannel::with_defaults)
        .for_each(|ch| async {
            tokio::spawn(ch.execute(EchoServer.serve()).for_each(|f| async {
                tokio::spawn(f);
            }));
        })
        .await;
    Ok(())
}

async fn tarpc_client(server: SocketAddr) -> Result<EchoServiceClient, Box<dyn std::error::Error>> {
    let transport = tarpc::serde_transport::tcp::connect(server, Bincode::default).await?;
    Ok(EchoServiceClient::new(tarpc::client::Config::default(), transport).spawn())
}

async fn tarpc_rtt(server: SocketAddr) -> Res {
    let c = tarpc_client(server).await?;
    let msg = vec![7u8; 32];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        let back = c.echo(tarpc::context::current(), msg.clone()).await?;
        if i >= WARMUP {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        if back.len() != 32 {
            return Err("bad echo".into());
        }
    }
    println!(
        "{:.2} {:.2}",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0)
    );
    Ok(())
}

async fn tarpc_tput(server: SocketAddr) -> Res {
    let c = tarpc_client(server).await?;
    let msg = vec![7u8; 32];
    tput(|| {
        let c = c.clone();
        let msg = msg.clone();
        async move {
            c.echo(tarpc::context::current(), msg).await?;
            Ok(())
        }
    })
    .await
}

async fn tcp_echo() -> Res {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", l.local_addr()?.port());
    loop {
        let (mut s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn tcp_echo_10mb(server: SocketAddr) -> Res {
    let s = TcpStream::connect(server).await?;
    s.set_nodelay(true)?;
    let (mut r, mut w) = s.into_split();
    let big = vec![9u8; TEN_MB];
    let mut back = vec![0u8; TEN_MB];
    let mut ms = Vec::new();
    for i in 0..=BIG_ROUNDS {
        let t = Instant::now();
        let data = big.clone();
        let writer = tokio::spawn(async move {
            let r = w.write_all(&data).await;
            (w, r)
        });
        r.read_exact(&mut back).await?;
        let (w2, res) = writer.await?;
        res?;
        w = w2;
        if i > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!("{:.3}", median(&ms));
    Ok(())
}

/// The cost of metrics alone: 64-byte-echo throughput with metrics off and on, alternating
/// in the same run (server cpu 0, client cpu 1), and their ratio.
pub(crate) fn bench_metrics(rounds: usize) {
    let (mut off, mut on, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let m = measure(&["rpc-echo"], &["rpc-tput"], CROSS, None);
        let mm = crate::metered(|| measure(&["rpc-echo"], &["rpc-tput"], CROSS, None));
        if let (Some(x), Some(y)) = (mm.first(), m.first()) {
            off.push(*y);
            on.push(*x);
            ratio.push(x / y);
        }
    }
    println!("# rpc metrics cost: {rounds} rounds, medians; metrics off then on, alternating");
    println!("rpc.tput64.calls_per_s: {:.2} calls/s", median(&off));
    println!("rpc.metrics.tput64.calls_per_s: {:.2} calls/s", median(&on));
    let lo = ratio.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratio.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "rpc.metrics.tput64.ratio: {:.3} ratio [{lo:.3}..{hi:.3}] (target >= 0.95; issue 14)",
        median(&ratio)
    );
}

/// The `rpc` benchmark: prints the table.
pub(crate) fn bench(rounds: usize) {
    let mut r: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut push = |k: &'static str, v: Option<&f64>| {
        if let Some(v) = v
            && v.is_finite()
        {
            r.entry(k).or_default().push(*v);
        }
    };
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (cpus, same) in [(SAME, true), (CROSS, false)] {
            let u = measure(&["udp-echo"], &["udp-rtt"], cpus, None);
            let m = measure(&["rpc-echo"], &["rpc-rtt"], cpus, None);
            let t = measure(&["tarpc-echo"], &["tarpc-rtt"], cpus, None);
            let (ku, km, kt, kr, kp, ktp) = if same {
                (
                    "udp.rtt.p50.same",
                    "rpc.rtt.p50.same",
                    "tarpc.rtt.p50.same",
                    "ratio.same",
                    "rpc.rtt.p99.same",
                    "tarpc.rtt.p99.same",
                )
            } else {
                (
                    "udp.rtt.p50.cross",
                    "rpc.rtt.p50.cross",
                    "tarpc.rtt.p50.cross",
                    "ratio.cross",
                    "rpc.rtt.p99.cross",
                    "tarpc.rtt.p99.cross",
                )
            };
            push(ku, u.first());
            push(km, m.first());
            push(kp, m.get(1));
            push(kt, t.first());
            push(ktp, t.get(1));
            if let (Some(x), Some(y)) = (m.first(), u.first()) {
                push(kr, Some(&(x / y)));
            }
            if let (Some(x), Some(y)) = (m.first(), t.first()) {
                push(
                    if same {
                        "vs_tarpc.same"
                    } else {
                        "vs_tarpc.cross"
                    },
                    Some(&(x / y)),
                );
            }
            if same {
                let k = crate::keyed(|| measure(&["rpc-echo"], &["rpc-rtt"], cpus, None));
                push("rpc.auth.rtt.p50.same", k.first());
                if let (Some(x), Some(y)) = (k.first(), m.first()) {
                    push("ratio.auth.same", Some(&(x / y)));
                }
            }
        }
        let m = measure(&["rpc-echo"], &["rpc-tput"], CROSS, None);
        let mm = crate::metered(|| measure(&["rpc-echo"], &["rpc-tput"], CROSS, None));
        push("rpc.metrics.tput64.calls_per_s", mm.first());
        if let (Some(x), Some(y)) = (mm.first(), m.first()) {
            push("ratio.metrics.tput", Some(&(x / y)));
        }
        let k = crate::keyed(|| measure(&["rpc-echo"], &["rpc-tput"], CROSS, None));
        push("rpc.auth.tput64.calls_per_s", k.first());
        if let (Some(x), Some(y)) = (k.first(), m.first()) {
            push("ratio.auth.tput", Some(&(x / y)));
        }
        let t = measure(&["tarpc-echo"], &["tarpc-tput"], CROSS, None);
        push("rpc.tput64.calls_per_s", m.first());
        push("rpc.tput64.p99", m.get(1));
        push("rpc.tput64.client_allocs_per_call", m.get(2));
        push("tarpc.tput64.client_allocs_per_call", t.get(2));
        push("tarpc.tput64.calls_per_s", t.first());
        push("tarpc.tput64.p99", t.get(1));
        if let (Some(x), Some(y)) = (m.first(), t.first()) {
            push("ratio.tput", Some(&(x / y)));
        }
        let tcp = measure(&["tcp-echo"], &["tcp-echo-10mb"], CROSS, None);
        let m = measure(&["rpc-echo"], &["rpc-10mb"], CROSS, None);
        push("tcp.10mb.echo.ms", tcp.first());
        push("rpc.10mb.echo.ms", m.first());
        if let (Some(x), Some(y)) = (m.first(), tcp.first()) {
            push("ratio.10mb", Some(&(x / y)));
        }
        let v = measure(&["rpc-typed-echo"], &["rpc-10mb-vec"], CROSS, None);
        let b = measure(&["rpc-typed-echo"], &["rpc-10mb-bytes"], CROSS, None);
        push("rpc.10mb.vec.echo.ms", v.first());
        push("rpc.10mb.bytes.echo.ms", b.first());
        if let (Some(x), Some(y)) = (v.first(), b.first()) {
            push("ratio.10mb.vec", Some(&(x / y)));
        }
    }
    let med = |k: &str| median(r.get(k).map(Vec::as_slice).unwrap_or(&[]));
    println!("# rpc benchmark: {rounds} rounds, medians; typed 32-byte echo calls unless noted");
    println!("# same = both processes on cpu 0; cross = server cpu 0, client cpu 1");
    for (k, unit) in [
        ("udp.rtt.p50.same", "us"),
        ("udp.rtt.p50.cross", "us"),
        ("tarpc.rtt.p50.same", "us"),
        ("tarpc.rtt.p99.same", "us"),
        ("tarpc.rtt.p50.cross", "us"),
        ("tarpc.rtt.p99.cross", "us"),
        ("tarpc.tput64.calls_per_s", "calls/s"),
        ("tarpc.tput64.p99", "us"),
        ("tarpc.tput64.client_allocs_per_call", "allocs"),
        ("tcp.10mb.echo.ms", "ms"),
        ("rpc.rtt.p50.same", "us"),
        ("rpc.rtt.p99.same", "us"),
        ("rpc.rtt.p50.cross", "us"),
        ("rpc.rtt.p99.cross", "us"),
        ("rpc.tput64.calls_per_s", "calls/s"),
        ("rpc.tput64.p99", "us"),
        ("rpc.tput64.client_allocs_per_call", "allocs"),
        ("rpc.10mb.echo.ms", "ms"),
        ("rpc.10mb.vec.echo.ms", "ms"),
        ("rpc.10mb.bytes.echo.ms", "ms"),
        ("rpc.auth.rtt.p50.same", "us"),
        ("rpc.auth.tput64.calls_per_s", "calls/s"),
        ("rpc.metrics.tput64.calls_per_s", "calls/s"),
    ] {
        println!("{k}: {:.2} {unit}", med(k));
    }
    for (k, name, target) in [
        ("ratio.same", "rpc.rtt.p50.same.ratio", "<= 1.2"),
        ("ratio.cross", "rpc.rtt.p50.cross.ratio", "<= 1.2"),
        ("ratio.tput", "rpc.tput64.vs_tarpc", ">= 2.5"),
        ("ratio.10mb", "rpc.10mb.ratio", "<= 1.5"),
        ("ratio.10mb.vec", "rpc.10mb.vec.ratio", "<= 1.2"),
        ("vs_tarpc.same", "rpc.rtt.p50.same.vs_tarpc", "<= 0.9"),
        ("vs_tarpc.cross", "rpc.rtt.p50.cross.vs_tarpc", "<= 0.9"),
        ("ratio.auth.same", "rpc.auth.rtt.p50.same.ratio", "<= 1.10"),
        ("ratio.auth.tput", "rpc.auth.tput64.ratio", ">= 0.85"),
        ("ratio.metrics.tput", "rpc.metrics.tput64.ratio", ">= 0.95"),
    ] {
        let xs = r.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{name}: {:.3} ratio [{lo:.3}..{hi:.3}] (target {target}; issue {})",
            med(k),
            if k.starts_with("vs_tarpc") {
                15
            } else if k.starts_with("ratio.auth") {
                12
            } else {
                10
            }
        );
    }
}
