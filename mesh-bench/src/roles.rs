//! The child-process roles: servers print their port first; clients take the server port as
//! their last argument and print one line of numbers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_core::transport::{Transport, TransportConfig};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::stats::percentile;

const ROLES: &[&str] = &[
    "udp-echo",
    "udp-rtt",
    "udp-sink",
    "udp-flood",
    "tcp-sink",
    "tcp-10mb",
    "mesh-echo",
    "mesh-rtt",
    "mesh-sink",
    "mesh-flood",
    "mesh-10mb",
    "proxy",
];
const WARMUP: usize = 200;
const ROUND_TRIPS: usize = 2000;
const FLOOD: usize = 200_000;
const TEN_MB: usize = 10 * 1024 * 1024;
/// Every child exits on its own after this long.
const LIFETIME: Duration = Duration::from_secs(20);

/// Whether `r` names a role.
pub(crate) fn is_role(r: &str) -> bool {
    ROLES.contains(&r)
}

/// Runs role `r` with `args` on a single-threaded runtime.
pub(crate) fn run(r: &str, args: &[&str]) {
    let Some((rt, server)) = crate::role_setup(args) else {
        return;
    };
    let arg0 = args.first().copied().unwrap_or("");
    let role = r.to_string();
    let r = role.clone();
    let arg0 = arg0.to_string();
    let fut = async move {
        let r = match r.as_str() {
            "udp-echo" => udp_echo().await,
            "udp-rtt" => udp_rtt(server).await,
            "udp-sink" => udp_sink().await,
            "udp-flood" => udp_flood(server).await,
            "tcp-sink" => tcp_sink().await,
            "tcp-10mb" => tcp_10mb(server).await,
            "mesh-echo" => mesh_echo().await,
            "mesh-rtt" => mesh_rtt(server, arg0 == "1").await,
            "mesh-sink" => mesh_sink().await,
            "mesh-flood" => mesh_flood(server).await,
            "mesh-10mb" => mesh_10mb(server).await,
            "proxy" => proxy(server, arg0.parse().unwrap_or(0.0)).await,
            _ => Ok(()),
        };
        if let Err(e) = r {
            eprintln!("{role}: {e}");
            println!("nan");
        }
    };
    // Run the role as a spawned task, as application code usually is.
    rt.block_on(async {
        let task = tokio::spawn(async move { tokio::time::timeout(LIFETIME, fut).await.is_ok() });
        if !matches!(task.await, Ok(true)) {
            println!("nan");
        }
    });
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn print_port(a: SocketAddr) {
    println!("{}", a.port());
}

fn report_rtt(samples: &mut [f64]) {
    println!(
        "{:.2} {:.2}",
        percentile(samples, 50.0),
        percentile(samples, 99.0)
    );
}

async fn udp_echo() -> Res {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    print_port(s.local_addr()?);
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = s.recv_from(&mut buf).await?;
        s.send_to(&buf[..n], from).await?;
    }
}

async fn udp_rtt(server: SocketAddr) -> Res {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    s.connect(server).await?;
    let msg = [7u8; 32];
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        s.send(&msg).await?;
        tokio::time::timeout(Duration::from_secs(1), s.recv(&mut buf)).await??;
        if i >= WARMUP {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    report_rtt(&mut samples);
    Ok(())
}

async fn udp_sink() -> Res {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    sock.set_recv_buffer_size(4 << 20)?;
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    sock.set_nonblocking(true)?;
    let s = UdpSocket::from_std(sock.into())?;
    print_port(s.local_addr()?);
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf).await?;
    let first = Instant::now();
    let mut last = first;
    let mut count = 1u64;
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await
    {
        r?;
        count += 1;
        last = Instant::now();
    }
    println!(
        "{:.0}",
        count as f64 / (last - first).as_secs_f64().max(1e-9)
    );
    Ok(())
}

async fn udp_flood(server: SocketAddr) -> Res {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    s.connect(server).await?;
    let msg = [1u8; 32];
    for _ in 0..FLOOD {
        s.send(&msg).await?;
    }
    println!("0");
    Ok(())
}

async fn tcp_sink() -> Res {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    print_port(l.local_addr()?);
    let (mut c, _) = l.accept().await?;
    c.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < TEN_MB {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    c.write_all(&[1]).await?;
    println!("{got}");
    Ok(())
}

async fn tcp_10mb(server: SocketAddr) -> Res {
    let data = vec![3u8; TEN_MB];
    let mut c = TcpStream::connect(server).await?;
    c.set_nodelay(true)?;
    let t = Instant::now();
    c.write_all(&data).await?;
    let mut one = [0u8; 1];
    c.read_exact(&mut one).await?;
    println!("{:.3}", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

async fn mesh() -> Result<Transport, Box<dyn std::error::Error>> {
    let mut cfg = TransportConfig::default();
    cfg.protocol.keyring = crate::bench_key().map(mesh_core::Keyring::new);
    Ok(Transport::bind(cfg).await?)
}

async fn mesh_echo() -> Res {
    let t = mesh().await?;
    print_port(t.local_addr());
    loop {
        let m = t.recv().await?;
        if m.channel == Some(0) {
            t.try_queue_detached(m.from, 0, m.data)?;
        }
    }
}

async fn mesh_rtt(server: SocketAddr, bulk: bool) -> Res {
    let t = mesh().await?;
    // Open the session first.
    t.send(server, 0, Bytes::from_static(b"hello")).await?;
    let _ = t.recv().await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if bulk {
        let (t2, stop2) = (t.clone(), stop.clone());
        let big = Bytes::from(vec![9u8; TEN_MB]);
        tokio::spawn(async move {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                if t2.send(server, 1, big.clone()).await.is_err() {
                    break;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let msg = Bytes::from(vec![7u8; 32]);
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let start = Instant::now();
        t.try_queue_detached(server, 0, msg.clone())?;
        tokio::time::timeout(Duration::from_secs(2), t.recv()).await??;
        if i >= WARMUP {
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let c = t.counters();
    eprintln!(
        "mesh-rtt: {} packets sent, {} datagrams in, {} lost, {} timeouts",
        c.packets_sent, c.datagrams_in, c.packets_lost, c.timeouts
    );
    report_rtt(&mut samples);
    Ok(())
}

async fn mesh_sink() -> Res {
    let t = mesh().await?;
    print_port(t.local_addr());
    let m = t.recv().await?;
    let first = Instant::now();
    let mut last = first;
    let mut count = 1u64;
    if m.data.len() >= TEN_MB {
        drop(t.queue(m.from, 0, Bytes::from_static(b"k")).await?);
    }
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), t.recv()).await {
        let m = r?;
        count += 1;
        last = Instant::now();
        if m.data.len() >= TEN_MB {
            drop(t.queue(m.from, 0, Bytes::from_static(b"k")).await?);
        }
    }
    println!(
        "{:.0}",
        count as f64 / (last - first).as_secs_f64().max(1e-9)
    );
    Ok(())
}

async fn mesh_flood(server: SocketAddr) -> Res {
    let t = mesh().await?;
    let msg = Bytes::from(vec![1u8; 32]);
    let mut last = None;
    for _ in 0..FLOOD {
        last = Some(t.queue(server, 0, msg.clone()).await?);
    }
    if let Some(d) = last {
        d.await?;
    }
    let c = t.counters();
    println!("{:.3}", c.datagrams_out as f64 / FLOOD as f64);
    Ok(())
}

async fn mesh_10mb(server: SocketAddr) -> Res {
    let t = mesh().await?;
    // Open the session first, so both sides measure the transfer alone.
    t.send(server, 1, Bytes::new()).await?;
    let data = Bytes::from(vec![5u8; TEN_MB]);
    let start = Instant::now();
    drop(t.queue(server, 1, data).await?);
    let reply = t.recv().await?;
    debug_assert_eq!(&reply.data[..], b"k");
    let elapsed = start.elapsed();
    let c = t.counters();
    eprintln!(
        "mesh-10mb: {} packets sent, {} lost, {} retransmitted bytes, {} timeouts, {} datagrams in",
        c.packets_sent, c.packets_lost, c.retransmitted_bytes, c.timeouts, c.datagrams_in
    );
    println!("{:.3}", elapsed.as_secs_f64() * 1e3);
    Ok(())
}

/// Datagrams one proxy receive call may return.
const PROXY_BATCH: usize = quinn_udp::BATCH_SIZE;

async fn proxy(server: SocketAddr, loss: f64) -> Res {
    use quinn_udp::{RecvMeta, UdpSocketState};
    use std::io::IoSliceMut;
    // Batched on both sides (recvmmsg/GRO in, GSO out) so the proxy is not the bottleneck.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    sock.set_nonblocking(true)?;
    let state = UdpSocketState::new((&sock).into())?;
    let s = UdpSocket::from_std(sock.into())?;
    print_port(s.local_addr()?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut client: Option<SocketAddr> = None;
    let mut bufs: Vec<Vec<u8>> = (0..PROXY_BATCH).map(|_| vec![0u8; 64 * 1024]).collect();
    let mut meta = [RecvMeta::default(); PROXY_BATCH];
    let max_segments = state.max_gso_segments().clamp(1, 40);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let Ok(r) = tokio::time::timeout(Duration::from_secs(10), s.readable()).await else {
            return Ok(());
        };
        r?;
        let n = {
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match s.try_io(tokio::io::Interest::READABLE, || {
                state.recv((&s).into(), &mut slices, &mut meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        };
        // Consecutive datagrams to one destination with one size go out as one GSO send.
        let mut pending: Option<(SocketAddr, usize, usize)> = None; // (to, size, count)
        for (m, buf) in meta.iter().zip(&bufs).take(n) {
            let from = m.addr;
            let stride = m.stride.max(1);
            for d in buf[..m.len].chunks(stride) {
                let to = if from == server {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                if rng.random_bool(loss) {
                    continue;
                }
                if let Some((pto, psize, k)) = pending
                    && (pto != to || psize != d.len() || k >= max_segments)
                {
                    send_all(&s, &state, pto, &out, psize).await;
                    out.clear();
                    pending = None;
                }
                out.extend_from_slice(d);
                pending = Some(match pending {
                    Some((t, sz, k)) => (t, sz, k + 1),
                    None => (to, d.len(), 1),
                });
            }
        }
        if let Some((to, size, _)) = pending {
            send_all(&s, &state, to, &out, size).await;
            out.clear();
        }
    }
}

/// Sends `d` (datagrams of `size` bytes, the last possibly shorter) to `to`, in one GSO send
/// when the kernel has it; waits for room when the socket buffer is full.
async fn send_all(
    s: &UdpSocket,
    state: &quinn_udp::UdpSocketState,
    to: SocketAddr,
    d: &[u8],
    size: usize,
) {
    let segments = d.len().div_ceil(size.max(1));
    let t = quinn_udp::Transmit {
        destination: to,
        ecn: None,
        contents: d,
        segment_size: (segments > 1).then_some(size),
        src_ip: None,
    };
    for _ in 0..1000 {
        match s.try_io(tokio::io::Interest::WRITABLE, || {
            state.try_send(s.into(), &t)
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = s.writable().await;
            }
            _ => return,
        }
    }
}
