//! The node's UDP socket: binding (address, NIC, port scan, advertise address), buffer sizes,
//! and batched I/O (GSO on send, recvmmsg + GRO on receive) through `quinn-udp`; a single
//! datagram goes out with a plain `sendto`.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Where and how a node's UDP socket binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SocketConfig {
    /// IP address to bind (v4 or v6). Default: 127.0.0.1 unless `nic` is set.
    pub address: Option<IpAddr>,
    /// Network interface whose first address is bound (IPv4 first unless `prefer_ipv6`).
    pub nic: Option<String>,
    /// With `nic`: prefer the interface's IPv6 address.
    pub prefer_ipv6: bool,
    /// First port to try; 0 lets the OS pick.
    pub port: u16,
    /// How many ports upward from `port` to try (default 100).
    pub port_range: u16,
    /// IP advertised to peers. Default: the bound IP; for an unspecified bind (0.0.0.0, ::)
    /// the first non-loopback address of the host of the same family.
    pub advertise: Option<IpAddr>,
    /// Receive buffer to ask the kernel for (default 4 MiB).
    pub recv_buffer_size: usize,
    /// Send buffer to ask the kernel for (default 4 MiB).
    pub send_buffer_size: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            address: None,
            nic: None,
            prefer_ipv6: false,
            port: 0,
            port_range: 100,
            advertise: None,
            recv_buffer_size: 4 * 1024 * 1024,
            send_buffer_size: 4 * 1024 * 1024,
        }
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// `address` and `nic` are both set.
    #[error("socket config: set either `address` or `nic`, not both")]
    AddressAndNic,
    /// The NIC does not exist or has no usable address.
    #[error("socket config `nic`: no interface {nic:?} with an address (available: {available})")]
    UnknownNic {
        /// The name asked for.
        nic: String,
        /// Interfaces that exist.
        available: String,
    },
    /// Listing the host's interfaces failed.
    #[error("could not list network interfaces: {0}")]
    Interfaces(io::Error),
    /// Every port in the range is taken.
    #[error("socket config `port`: no free UDP port on {ip} in {first}..={last}: {last_error}")]
    NoFreePort {
        /// The IP.
        ip: IpAddr,
        /// First port tried.
        first: u16,
        /// Last port tried.
        last: u16,
        /// The error of the last attempt.
        last_error: io::Error,
    },
    /// No address to advertise for an unspecified bind.
    #[error(
        "socket config `advertise`: bound to {0} and no non-loopback address of that family was found; set `advertise`"
    )]
    NoAdvertise(IpAddr),
    /// Another socket operation failed.
    #[error("socket setup failed: {0}")]
    Io(#[from] io::Error),
}

/// A bound UDP socket with batched I/O.
#[derive(Debug)]
pub(crate) struct MeshSocket {
    /// Registered with the runtime for read readiness only: a socket registered for writes
    /// too gets a (useless) write-readiness event after every send, which costs the runtime
    /// one more `epoll_wait` per datagram sent. Sends go straight to the socket; the rare
    /// wait for room in the send buffer registers a duplicate of it (see `writable`).
    io: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    local: SocketAddr,
    advertise: SocketAddr,
}

fn interfaces() -> Result<Vec<if_addrs::Interface>, SocketError> {
    if_addrs::get_if_addrs().map_err(SocketError::Interfaces)
}

fn nic_ip(nic: &str, prefer_v6: bool) -> Result<IpAddr, SocketError> {
    let all = interfaces()?;
    let mine: Vec<IpAddr> = all
        .iter()
        .filter(|i| i.name == nic)
        .map(|i| i.ip())
        .collect();
    let pick = mine
        .iter()
        .find(|ip| ip.is_ipv6() == prefer_v6)
        .or(mine.first())
        .copied();
    pick.ok_or_else(|| {
        let mut names: Vec<String> = all.iter().map(|i| i.name.clone()).collect();
        names.sort();
        names.dedup();
        SocketError::UnknownNic {
            nic: nic.to_string(),
            available: names.join(", "),
        }
    })
}

fn bind_one(addr: SocketAddr, cfg: &SocketConfig) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack when bound to [::]; v4 peers appear as mapped addresses, normalized below.
        let _ = sock.set_only_v6(false);
    }
    let _ = sock.set_recv_buffer_size(cfg.recv_buffer_size);
    let _ = sock.set_send_buffer_size(cfg.send_buffer_size);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// Registers `sock` (non-blocking, owned by the returned value) with the runtime's reactor for
/// `interest` only. `AsyncFd::with_interest` is deprecated in recent tokio because it cannot
/// check that the value owns its descriptor; a `std::net::UdpSocket` does, and keeps it open
/// until after the registration is dropped, which is what the replacement (an `unsafe fn`
/// spelling out that contract) asks for. tokio's `UdpSocket` offers no way to leave write
/// readiness out.
#[allow(deprecated)]
fn register(
    sock: std::net::UdpSocket,
    interest: Interest,
) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    AsyncFd::with_interest(sock, interest)
}

/// Turns an IPv4-mapped IPv6 address into the IPv4 one, so a peer has one identity.
pub(crate) fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl MeshSocket {
    /// Binds per `config`. Must be called within a tokio runtime.
    pub(crate) fn bind(config: &SocketConfig) -> Result<MeshSocket, SocketError> {
        let ip = match (&config.address, &config.nic) {
            (Some(_), Some(_)) => return Err(SocketError::AddressAndNic),
            (Some(ip), None) => *ip,
            (None, Some(nic)) => nic_ip(nic, config.prefer_ipv6)?,
            (None, None) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let (first, last) = if config.port == 0 {
            (0, 0)
        } else {
            let last = config
                .port
                .saturating_add(config.port_range.saturating_sub(1));
            (config.port, last)
        };
        let mut last_error = io::Error::other("no port tried");
        let mut bound = None;
        for port in first..=last {
            match bind_one(SocketAddr::new(ip, port), config) {
                Ok(s) => {
                    bound = Some(s);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let Some(sock) = bound else {
            return Err(SocketError::NoFreePort {
                ip,
                first,
                last,
                last_error,
            });
        };
        let buffers = (
            sock.recv_buffer_size().unwrap_or(0),
            sock.send_buffer_size().unwrap_or(0),
        );
        let state = UdpSocketState::new((&sock).into())?;
        // quinn-udp asks for the TOS byte of every datagram (for ECN, which the transport does
        // not use): one control message less per receive.
        if ip.is_ipv4() || !sock.only_v6().unwrap_or(true) {
            let _ = sock.set_recv_tos_v4(false);
        }
        if ip.is_ipv6() {
            let _ = sock.set_recv_tclass_v6(false);
        }
        let std_sock: std::net::UdpSocket = sock.into();
        let io = register(std_sock, Interest::READABLE)?;
        let local = io.get_ref().local_addr()?;
        let adv_ip = match config.advertise {
            Some(a) => a,
            None if ip.is_unspecified() => interfaces()?
                .iter()
                .map(|i| i.ip())
                .find(|a| !a.is_loopback() && a.is_ipv6() == ip.is_ipv6())
                .ok_or(SocketError::NoAdvertise(ip))?,
            None => ip,
        };
        let advertise = SocketAddr::new(adv_ip, local.port());
        tracing::debug!(
            %local, %advertise,
            recv_buffer = buffers.0, send_buffer = buffers.1,
            gso = state.max_gso_segments(), gro = state.gro_segments(),
            "udp socket bound"
        );
        Ok(MeshSocket {
            io,
            state,
            local,
            advertise,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address peers should use (advertised IP, bound port).
    pub(crate) fn advertise_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// Largest number of datagrams one send may carry (1 without GSO).
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends `contents` (consecutive datagrams of `segment_size` bytes, the last possibly
    /// shorter) to `dest` without waiting. `WouldBlock` when the socket buffer is full.
    /// Returns the number of datagrams sent.
    pub(crate) fn try_send(
        &self,
        dest: SocketAddr,
        contents: &[u8],
        segment_size: usize,
    ) -> io::Result<usize> {
        let n = contents.len().div_ceil(segment_size.max(1));
        if n <= 1 {
            // One datagram: a plain `sendto`, cheaper for the kernel than `sendmsg` with
            // control messages (no ECN is set, so nothing is lost).
            return self.io.get_ref().send_to(contents, dest).map(|_| 1);
        }
        let t = Transmit {
            destination: dest,
            ecn: None,
            contents,
            segment_size: (n > 1).then_some(segment_size),
            src_ip: None,
        };
        let r = self.state.try_send(self.io.get_ref().into(), &t);
        match r {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) if n > 1 => {
                // GSO refused (the state turns it off for later sends): one datagram at a time.
                tracing::debug!(error = %e, "GSO send failed; falling back to single datagrams");
                let mut sent = 0;
                for seg in contents.chunks(segment_size) {
                    let t = Transmit {
                        destination: dest,
                        ecn: None,
                        contents: seg,
                        segment_size: None,
                        src_ip: None,
                    };
                    match self.state.try_send(self.io.get_ref().into(), &t) {
                        Ok(()) => sent += 1,
                        Err(e) if sent == 0 => return Err(e),
                        Err(_) => break,
                    }
                }
                Ok(sent)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until the socket may be writable (after a send returned `WouldBlock`).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        // The socket is registered for reads only; watch a duplicate of it for writes for
        // as long as this wait lasts (the send buffer rarely fills).
        let dup = register(self.io.get_ref().try_clone()?, Interest::WRITABLE)?;
        let mut ready = dup.writable().await?;
        ready.retain_ready();
        Ok(())
    }

    /// Waits until the socket may be readable.
    #[cfg(test)]
    pub(crate) async fn readable(&self) -> io::Result<()> {
        let mut ready = self.io.readable().await?;
        ready.retain_ready();
        Ok(())
    }

    /// Polls for read readiness. Only the task of the most recent call is woken (unlike
    /// [`readable`](Self::readable), which wakes every waiter), and it is woken before the
    /// `readable` waiters.
    pub(crate) fn poll_recv_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.io
            .poll_read_ready(cx)
            .map_ok(|mut ready| ready.retain_ready())
    }

    /// Waits for datagrams, then receives a batch into `batch`. Returns how many datagrams.
    #[cfg(test)]
    pub(crate) async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_recv_batch(batch) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Receives a batch if datagrams are ready; `WouldBlock` otherwise.
    pub(crate) fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.clear();
        let RecvBatch {
            bufs,
            meta,
            msgs,
            want,
        } = batch;
        let want_now = (*want).clamp(1, BATCH);
        let mut n = 0;
        let r = self.io.try_io(Interest::READABLE, |sock| {
            n = match bufs.as_mut_slice() {
                // Small batches (the common case) build two iovecs, not 32.
                [a, b, ..] if want_now <= 2 => {
                    let mut slices = [IoSliceMut::new(a), IoSliceMut::new(b)];
                    self.state
                        .recv(sock.into(), &mut slices[..want_now], meta)?
                }
                _ => {
                    let mut slices = bufs.each_mut().map(|b| IoSliceMut::new(b.as_mut_slice()));
                    self.state
                        .recv(sock.into(), &mut slices[..want_now], meta)?
                }
            };
            if n < want_now {
                // A short batch means the queue is drained: report WouldBlock so tokio
                // clears readiness now instead of after one more (empty) system call.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => {}
            Err(e) => return Err(e),
        }
        // Ask for as many datagrams as are likely waiting: a full batch doubles the next one,
        // a short one shrinks it. Preparing 32 headers for one datagram costs more than the
        // datagram; two keep a short batch the sign of an empty queue.
        *want = if n >= want_now {
            (want_now * 2).min(BATCH)
        } else {
            (n * 2).clamp(2.min(BATCH), BATCH)
        };
        for (i, m) in meta.iter().take(n).enumerate() {
            let stride = m.stride.max(1);
            let mut off = 0;
            while off < m.len {
                let end = (off + stride).min(m.len);
                msgs.push((i, off, end, normalize(m.addr)));
                off = end;
            }
        }
        Ok(batch.msgs.len())
    }
}

/// Datagrams one receive call may return.
const BATCH: usize = quinn_udp::BATCH_SIZE;

/// Reusable receive buffers; GRO super-datagrams are split into their datagrams.
#[derive(Debug)]
pub(crate) struct RecvBatch {
    bufs: [Vec<u8>; BATCH],
    meta: [RecvMeta; BATCH],
    msgs: Vec<(usize, usize, usize, SocketAddr)>,
    /// How many datagrams the next receive asks for.
    want: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Buffers for `quinn_udp::BATCH_SIZE` receives of up to 64 KiB (GRO) each.
    pub(crate) fn new() -> Self {
        RecvBatch {
            bufs: std::array::from_fn(|_| vec![0u8; 64 * 1024]),
            meta: [RecvMeta::default(); BATCH],
            msgs: Vec::with_capacity(BATCH * 4),
            want: 2,
        }
    }

    fn clear(&mut self) {
        self.msgs.clear();
    }

    /// The datagrams: `(source, payload)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.msgs
            .iter()
            .map(|&(i, a, b, from)| (from, &self.bufs[i][a..b]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn cfg(ip: &str, port: u16) -> SocketConfig {
        SocketConfig {
            address: Some(ip.parse().unwrap()),
            port,
            ..SocketConfig::default()
        }
    }

    #[tokio::test]
    async fn port_scan_skips_taken_ports_and_reports_exhaustion() {
        let first = MeshSocket::bind(&cfg("127.0.0.1", 0)).unwrap();
        let taken = first.local_addr().port();
        let second = MeshSocket::bind(&SocketConfig {
            port_range: 5,
            ..cfg("127.0.0.1", taken)
        });
        if let Ok(s) = second {
            assert!(s.local_addr().port() > taken);
        }
        let none = MeshSocket::bind(&SocketConfig {
            port_range: 1,
            ..cfg("127.0.0.1", taken)
        });
        let err = none.unwrap_err().to_string();
        assert!(err.contains("no free UDP port"), "{err}");
    }

    #[tokio::test]
    async fn nic_and_errors() {
        let lo = MeshSocket::bind(&SocketConfig {
            nic: Some("lo".into()),
            ..SocketConfig::default()
        })
        .unwrap();
        assert!(lo.local_addr().ip().is_loopback());
        let err = MeshSocket::bind(&SocketConfig {
            nic: Some("no-such-nic0".into()),
            ..SocketConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("no-such-nic0") && err.contains("lo"), "{err}");
        let adv = MeshSocket::bind(&SocketConfig {
            advertise: Some("127.0.0.9".parse().unwrap()),
            ..cfg("127.0.0.1", 0)
        })
        .unwrap();
        assert_eq!(adv.advertise_addr().ip().to_string(), "127.0.0.9");
        assert_eq!(adv.advertise_addr().port(), adv.local_addr().port());
    }

    async fn exchange(ip: &str) {
        let a = MeshSocket::bind(&cfg(ip, 0)).unwrap();
        let b = MeshSocket::bind(&cfg(ip, 0)).unwrap();
        // A GSO batch of 20 datagrams of 1200 bytes (the last shorter), then receive all.
        let mut contents = Vec::new();
        for i in 0..20u8 {
            let len = if i == 19 { 100 } else { 1200 };
            contents.extend(std::iter::repeat_n(i, len));
        }
        let mut sent = 0;
        for _ in 0..100 {
            a.writable().await.unwrap();
            match a.try_send(b.local_addr(), &contents, 1200) {
                Ok(n) => {
                    sent = n;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("send failed: {e}"),
            }
        }
        assert_eq!(sent, 20);
        let mut batch = RecvBatch::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < sent {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(5), b.recv_batch(&mut batch))
                    .await
                    .expect("datagrams arrive")
                    .unwrap();
            assert!(n > 0);
            for (from, d) in batch.iter() {
                assert_eq!(from, a.local_addr());
                got.push(d.to_vec());
            }
        }
        assert_eq!(got.len(), 20);
        for (i, d) in got.iter().enumerate() {
            assert!(d.iter().all(|&x| x == i as u8));
            assert_eq!(d.len(), if i == 19 { 100 } else { 1200 });
        }
    }

    #[tokio::test]
    async fn gso_batch_round_trip_v4() {
        exchange("127.0.0.1").await;
    }

    #[tokio::test]
    async fn gso_batch_round_trip_v6() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            return; // no IPv6 loopback on this host
        }
        exchange("::1").await;
    }

    #[test]
    fn mapped_addresses_are_normalized() {
        let m: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(normalize(m), "127.0.0.1:5".parse::<SocketAddr>().unwrap());
    }
}
