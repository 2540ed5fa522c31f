//! A lossy, reordering UDP relay on loopback, for tests of what the mesh does on a bad path.
//!
//! It listens on `listen` and relays to `upstream`: each client gets its own upstream socket
//! (so the upstream side sees one address per client and answers through it), and each
//! datagram, in either direction, is dropped with probability `loss` or held back behind the
//! next one with probability `reorder`. The random choices are seeded, and the relay stops
//! when dropped or after `idle` without traffic.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// What the relay did.
#[derive(Default)]
pub(crate) struct ProxyCounts {
    pub(crate) forwarded: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) reordered: AtomicU64,
}

/// A running relay; dropping it stops it.
pub(crate) struct LossyProxy {
    pub(crate) counts: Arc<ProxyCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most clients one relay serves (each has a socket).
const MAX_CLIENTS: usize = 64;

/// The loss and reordering decisions of one direction.
struct Faults {
    rng: rand::rngs::StdRng,
    loss: f64,
    reorder: f64,
    held: Option<(Vec<u8>, SocketAddr)>,
}

impl Faults {
    /// What to send now, in order, for `d` tagged with the client `to` it is from or for.
    fn pass(
        &mut self,
        d: &[u8],
        to: SocketAddr,
        counts: &ProxyCounts,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        if self.rng.random_bool(self.loss) {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            return self.held.take().into_iter().collect();
        }
        if self.held.is_none() && self.rng.random_bool(self.reorder) {
            counts.reordered.fetch_add(1, Ordering::Relaxed);
            self.held = Some((d.to_vec(), to));
            return Vec::new();
        }
        let mut out = vec![(d.to_vec(), to)];
        out.extend(self.held.take());
        out
    }
}

impl LossyProxy {
    /// Starts a relay from `listen` (bound now) to `upstream`.
    pub(crate) async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        loss: f64,
        reorder: f64,
        seed: u64,
        idle: Duration,
    ) -> std::io::Result<LossyProxy> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let counts = Arc::new(ProxyCounts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            // Datagrams the upstream sent back, with the client they are for.
            let (back_tx, mut back_rx) = mpsc::channel::<(Vec<u8>, SocketAddr)>(1024);
            let mut clients: HashMap<SocketAddr, (Arc<UdpSocket>, tokio::task::JoinHandle<()>)> =
                HashMap::new();
            let mut out_faults = Faults {
                rng: rand::rngs::StdRng::seed_from_u64(seed),
                loss,
                reorder,
                held: None,
            };
            let mut in_faults = Faults {
                rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed),
                loss,
                reorder,
                held: None,
            };
            let mut buf = vec![0u8; 65536];
            loop {
                tokio::select! {
                    r = tokio::time::timeout(idle, front.recv_from(&mut buf)) => {
                        let Ok(Ok((n, from))) = r else { break };
                        if !clients.contains_key(&from) {
                            if clients.len() >= MAX_CLIENTS {
                                continue;
                            }
                            let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                            let sock = Arc::new(sock);
                            let (s, tx) = (sock.clone(), back_tx.clone());
                            let reader = tokio::spawn(async move {
                                let mut b = vec![0u8; 65536];
                                while let Ok(Ok((n, _))) =
                                    tokio::time::timeout(idle, s.recv_from(&mut b)).await
                                {
                                    if tx.send((b[..n].to_vec(), from)).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            clients.insert(from, (sock, reader));
                        }
                        // Tagged with the client: a held datagram leaves through its own socket.
                        for (d, client) in out_faults.pass(&buf[..n], from, &c) {
                            if let Some((sock, _)) = clients.get(&client) {
                                c.forwarded.fetch_add(1, Ordering::Relaxed);
                                let _ = sock.send_to(&d, upstream).await;
                            }
                        }
                    }
                    Some((d, client)) = back_rx.recv() => {
                        for (d, to) in in_faults.pass(&d, client, &c) {
                            c.forwarded.fetch_add(1, Ordering::Relaxed);
                            let _ = front.send_to(&d, to).await;
                        }
                    }
                }
            }
            for (_, (_, reader)) in clients {
                reader.abort();
            }
        });
        Ok(LossyProxy { counts, task })
    }
}
