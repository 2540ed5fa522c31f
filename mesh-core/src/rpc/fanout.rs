//! Fan-out through a relay tree (`send_many` / `usend_many`): the payload is encoded once;
//! each hop delivers to itself and forwards to at most `limit` nodes, each of which takes a
//! share of the remaining list. Every target is reached exactly once (when nothing fails); a
//! relay whose next hop is unreachable skips it and forwards to that hop's share directly.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::client::transport_error;
use super::error::CallError;
use super::hop_queue::Sent;
use super::wire::{self, MAX_RELAY_TARGETS, RelayHeader};
use super::{Rpc, channel_for};
use crate::node::Target;
use crate::rudp::SendError;
use crate::transport::{Delivery, TransportError};

/// The most next hops a relaying node sends to itself, whatever limit the relay asks for.
pub(crate) const MAX_RELAY_FANOUT: u16 = 64;

/// A next hop of a fan-out and its share of the targets.
struct Hop {
    addr: SocketAddr,
    share: Vec<SocketAddr>,
    state: HopState,
}

/// Where a hop's relay message is.
enum HopState {
    /// Queued on the transport: resolves on acknowledgement.
    Queued(Delivery),
    /// Behind other relay messages to the hop, or the hop's queue was full: queued on the
    /// transport in order, when there is room.
    Behind(super::hop_queue::Queued),
    /// Sent as a datagram (unreliable fan-out).
    Sent,
    Failed(CallError<Bytes>),
}

/// Splits `targets` into at most `limit` groups of near-equal size: each group's first node is
/// a next hop, the rest its share.
pub(crate) fn split(targets: &[SocketAddr], limit: usize) -> Vec<&[SocketAddr]> {
    let limit = limit.max(1);
    if targets.is_empty() {
        return Vec::new();
    }
    let groups = limit.min(targets.len());
    let base = targets.len() / groups;
    let extra = targets.len() % groups;
    let mut out = Vec::with_capacity(groups);
    let mut at = 0;
    for g in 0..groups {
        let n = base + usize::from(g < extra);
        out.push(&targets[at..at + n]);
        at += n;
    }
    out
}

impl Rpc {
    /// A relay arrived: deliver here, then forward the share.
    pub(crate) fn on_relay(
        self: &Arc<Self>,
        from: SocketAddr,
        h: RelayHeader,
        targets: Vec<SocketAddr>,
        payload: Bytes,
    ) {
        // One look at the view (released before the handler runs: it may query the mesh).
        let (sender, targets) = {
            let view = self.membership.view();
            // The handler sees the node that started the fan-out as the sender, when that
            // node is one we know (a claim about an unknown address is not passed on).
            // The claim is believed only from a hop that is itself a listed node: a stray
            // sender cannot make a handler see a member as the caller. (A listed node could
            // still lie; relay origins authenticated by the cluster key close that.)
            let hop_listed = view.by_addr(from).is_some();
            let sender = if h.origin == from || (hop_listed && view.by_addr(h.origin).is_some()) {
                h.origin
            } else {
                from
            };
            // Forward only to listed nodes: a stray packet must not make this node send to
            // arbitrary addresses.
            // Each target once: a list that repeats a node must not make this node copy the
            // payload, and the target run its handler, once per repetition.
            let before = targets.len();
            let mut seen = std::collections::HashSet::with_capacity(targets.len());
            let kept: Vec<SocketAddr> = targets
                .into_iter()
                .filter(|a| !self.is_local(*a) && view.by_addr(*a).is_some() && seen.insert(*a))
                .collect();
            if kept.len() < before {
                tracing::debug!(%from, dropped = before - kept.len(), "relay targets outside the view dropped");
            }
            (sender, kept)
        };
        self.on_oneway(sender, h.cmd, h.fingerprint, payload.clone());
        if targets.is_empty() {
            return;
        }
        // Forwarding is work done for a peer: it counts against the concurrency limit.
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.counters
                .dropped_relays
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%from, command = h.cmd, "overloaded: relay not forwarded");
            return;
        };
        // Written now, on the receiving task, so that fan-outs leave in the order they came;
        // only the wait for the acknowledgements runs on its own task.
        // The fan-out per hop is the sender's choice, within a bound: a relay cannot make
        // this node send more than MAX_RELAY_FANOUT copies itself.
        let h = RelayHeader {
            limit: h.limit.clamp(1, MAX_RELAY_FANOUT),
            ..h
        };
        let hops = self.send_hops(h, &targets, &payload);
        if !h.reliable {
            for hop in &hops {
                if let HopState::Failed(e) = &hop.state {
                    tracing::debug!(addr = %hop.addr, command = h.cmd, error = ?e, "relay hop failed");
                }
            }
            return;
        }
        let wait = self.finish_hops(h, hops, payload);
        tokio::spawn(async move {
            for (addr, e) in wait.await {
                tracing::debug!(%addr, command = h.cmd, error = ?e, "relay hop failed");
            }
            drop(permit);
        });
    }

    /// Sends to every target through the relay tree; returns the failures this node saw
    /// (the first hops it sent to, after trying their shares directly).
    pub(crate) fn forward(
        self: &Arc<Self>,
        h: RelayHeader,
        targets: Vec<SocketAddr>,
        payload: Bytes,
    ) -> BoxFuture<'static, Vec<(SocketAddr, CallError<Bytes>)>> {
        // The fan-out per hop is the sender's choice, within a bound: a relay cannot make
        // this node send more than MAX_RELAY_FANOUT copies itself.
        let h = RelayHeader {
            limit: h.limit.clamp(1, MAX_RELAY_FANOUT),
            ..h
        };
        let hops = self.send_hops(h, &targets, &payload);
        self.finish_hops(h, hops, payload)
    }

    /// Writes the relay messages to this node's next hops now, in order: two fan-outs that
    /// pass through this node leave it in the order they came (a queue that is full is
    /// waited for later, in [`finish_hops`](Self::finish_hops)).
    fn send_hops(&self, h: RelayHeader, targets: &[SocketAddr], payload: &Bytes) -> Vec<Hop> {
        split(targets, usize::from(h.limit))
            .into_iter()
            .filter_map(|group| {
                let (hop, share) = group.split_first()?;
                let bytes = wire::relay(&h, share, payload);
                let target = Target::Addr(*hop);
                let state = if h.reliable {
                    let channel = channel_for(bytes.len());
                    match self.hop_queues.send(&self.transport, *hop, channel, bytes) {
                        Ok(Sent::Queued(d)) => HopState::Queued(d),
                        Ok(Sent::Behind(rx)) => HopState::Behind(rx),
                        Err(e) => {
                            if matches!(e, TransportError::Send(SendError::Full { .. })) {
                                self.counters
                                    .dropped_relays
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::warn!(hop = %hop, command = h.cmd, "relay backlog full: relay message not sent");
                            }
                            HopState::Failed(transport_error(&target, h.cmd, e))
                        }
                    }
                } else {
                    match self.transport.send_unreliable(*hop, bytes) {
                        Ok(()) => HopState::Sent,
                        Err(e) => HopState::Failed(transport_error(&target, h.cmd, e)),
                    }
                };
                Some(Hop {
                    addr: *hop,
                    share: share.to_vec(),
                    state,
                })
            })
            .collect()
    }

    /// Waits for the next hops' acknowledgements; a hop that is gone has its share sent
    /// directly (so it is not lost with it). Returns the failures seen.
    fn finish_hops(
        self: &Arc<Self>,
        h: RelayHeader,
        hops: Vec<Hop>,
        payload: Bytes,
    ) -> BoxFuture<'static, Vec<(SocketAddr, CallError<Bytes>)>> {
        let this = self.clone();
        Box::pin(async move {
            let waits = hops.into_iter().map(|hop| {
                let this = this.clone();
                let payload = payload.clone();
                async move {
                    let target = Target::Addr(hop.addr);
                    let sent = match hop.state {
                        HopState::Sent => Ok(()),
                        HopState::Failed(e) => Err(e),
                        HopState::Queued(d) => {
                            d.await.map_err(|e| transport_error(&target, h.cmd, e))
                        }
                        HopState::Behind(rx) => match rx.await {
                            Ok(Ok(d)) => d.await.map_err(|e| transport_error(&target, h.cmd, e)),
                            Ok(Err(e)) => Err(transport_error(&target, h.cmd, e)),
                            Err(_) => Err(transport_error(&target, h.cmd, TransportError::Closed)),
                        },
                    };
                    match sent {
                        Ok(()) => Vec::new(),
                        Err(e) => {
                            let mut out = vec![(hop.addr, e)];
                            if h.reliable && !hop.share.is_empty() {
                                out.extend(this.forward(h, hop.share, payload).await);
                            }
                            out
                        }
                    }
                }
            });
            futures::future::join_all(waits)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }

    /// `send_many`/`usend_many` from this node.
    pub(crate) async fn send_many(
        self: &Arc<Self>,
        targets: Vec<SocketAddr>,
        cmd: u16,
        fingerprint: u32,
        payload: Bytes,
        limit: usize,
        reliable: bool,
    ) -> Result<(), CallError<Bytes>> {
        let mut list: Vec<SocketAddr> = Vec::with_capacity(targets.len());
        let mut local = false;
        for t in targets {
            if self.is_local(t) {
                local = true;
            } else if !list.contains(&t) {
                list.push(t);
            }
        }
        if list.len() > MAX_RELAY_TARGETS {
            return Err(CallError::TooLarge {
                command: cmd,
                size: list.len() as u64,
                max: MAX_RELAY_TARGETS as u64,
                ran: false,
            });
        }
        if !reliable {
            // Every hop's datagram must fit: the first hops carry the largest shares.
            let room = self.settings.max_unreliable;
            let worst = split(&list, limit)
                .iter()
                .map(|g| wire::relay_len(&self.local, g.get(1..).unwrap_or(&[]), payload.len()))
                .max()
                .unwrap_or(0);
            if worst > room {
                return Err(CallError::TooLarge {
                    command: cmd,
                    size: worst as u64,
                    max: room as u64,
                    ran: false,
                });
            }
        }
        if local {
            self.on_oneway(self.local, cmd, fingerprint, payload.clone());
        }
        let header = RelayHeader {
            cmd,
            fingerprint,
            limit: u16::try_from(limit).unwrap_or(u16::MAX),
            reliable,
            origin: self.local,
        };
        let failures = self.forward(header, list, payload).await;
        match failures.into_iter().next() {
            None => Ok(()),
            Some((_, e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_a_partition_into_at_most_limit_groups() {
        let addrs: Vec<SocketAddr> = (1..=20)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        for limit in 1..=25 {
            let g = split(&addrs, limit);
            assert!(g.len() <= limit);
            let flat: Vec<SocketAddr> = g.iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(flat, addrs);
            let sizes: Vec<usize> = g.iter().map(|s| s.len()).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1));
        }
        assert!(split(&[], 3).is_empty());
    }
}

#[cfg(test)]
mod relay_tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use crate::rpc::{CallContext, handler, wire};
    use crate::transport::{Transport, TransportConfig};
    use crate::{LocalRegistry, Mesh};

    /// Relay messages to a hop whose send queue is full wait in order: fan-outs through
    /// one hop reach it in the order they were sent, however room comes back (security
    /// finding 15: before, every waiter raced for the room), and what waits is bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_behind_a_full_queue_keep_their_order() {
        let reg = LocalRegistry::new();
        let a = Mesh::test_node(&reg).await;
        // A hop that does not read at first: its sender's queue fills.
        let hop = Transport::bind(TransportConfig::default()).await.unwrap();
        let rpc = a.rpc().clone();
        let header = wire::RelayHeader {
            cmd: 9,
            fingerprint: 0,
            limit: 1,
            reliable: true,
            origin: a.addr(),
        };
        const N: u32 = 90;
        let mut acks = Vec::new();
        for i in 0..N {
            let mut body = vec![0u8; 1 << 20];
            body[..4].copy_from_slice(&i.to_be_bytes());
            acks.push(tokio::spawn(rpc.forward(
                header,
                vec![hop.local_addr()],
                body.into(),
            )));
        }
        assert!(rpc.hop_queues.bytes() > 0, "some relay messages wait");
        assert!(rpc.hop_queues.bytes() <= super::super::hop_queue::HOP_BACKLOG_BYTES);
        let mut seen = Vec::new();
        while seen.len() < N as usize {
            let m = tokio::time::timeout(Duration::from_secs(20), hop.recv())
                .await
                .expect("relay messages keep coming")
                .unwrap();
            if let Ok(wire::Envelope::Relay { payload, .. }) = wire::decode(m.data) {
                seen.push(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
        }
        assert_eq!(seen, (0..N).collect::<Vec<_>>(), "in the order sent");
        for ack in acks {
            assert!(ack.await.unwrap().is_empty(), "every hop acknowledged");
        }
        a.stop().await;
        hop.close();
    }

    /// A relay from a stray peer reaches listed nodes only: it cannot make a node send to
    /// an arbitrary address.
    #[tokio::test]
    async fn relays_forward_only_to_listed_nodes() {
        let reg = LocalRegistry::new();
        let a = Mesh::test_node(&reg).await;
        let b = Mesh::test_node(&reg).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _h = b
            .handle(
                9,
                handler(move |_c: CallContext, v: u32| {
                    let _ = tx.send(v);
                    async {}
                }),
            )
            .unwrap();
        // Not a mesh node: a plain transport that would see anything sent to it.
        let outsider = Transport::bind(TransportConfig::default()).await.unwrap();
        let stray = Transport::bind(TransportConfig::default()).await.unwrap();
        let payload = crate::codec::encode(&7u32).unwrap();
        let header = wire::RelayHeader {
            cmd: 9,
            fingerprint: 0,
            limit: 2,
            reliable: true,
            origin: stray.local_addr(),
        };
        let relay = wire::relay(&header, &[outsider.local_addr(), b.addr()], &payload);
        stray.send(a.addr(), 0, relay).await.unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap(),
            Some(7)
        );
        let nothing = tokio::time::timeout(Duration::from_millis(300), outsider.recv()).await;
        assert!(nothing.is_err(), "the outsider received {nothing:?}");
        b.stop().await;
        a.stop().await;
    }

    /// A relay whose target list repeats one node a thousand times, with a limit as large,
    /// reaches that node once: the relaying node neither copies the payload per repetition
    /// nor makes the target run its handler more than once.
    #[tokio::test]
    async fn a_relay_repeating_a_target_reaches_it_once() {
        let reg = LocalRegistry::new();
        let a = Mesh::test_node(&reg).await;
        let b = Mesh::test_node(&reg).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _h = b
            .handle(
                9,
                handler(move |_c: CallContext, v: u32| {
                    let _ = tx.send(v);
                    async {}
                }),
            )
            .unwrap();
        let stray = Transport::bind(TransportConfig::default()).await.unwrap();
        let payload = crate::codec::encode(&7u32).unwrap();
        let header = wire::RelayHeader {
            cmd: 9,
            fingerprint: 0,
            limit: 1000,
            reliable: true,
            origin: stray.local_addr(),
        };
        let relay = wire::relay(&header, &vec![b.addr(); 1000], &payload);
        stray.send(a.addr(), 0, relay).await.unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap(),
            Some(7)
        );
        let more = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(more.is_err(), "delivered again: {more:?}");
        b.stop().await;
        a.stop().await;
    }

    /// A relay from an address outside the view cannot claim a member as its origin: the
    /// handler sees the real sender (security finding 5, for senders outside the mesh).
    #[tokio::test]
    async fn a_stray_relay_cannot_claim_a_member_as_origin() {
        let reg = LocalRegistry::new();
        let a = Mesh::test_node(&reg).await;
        let member = Mesh::test_node(&reg).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _h = a
            .handle(
                9,
                handler(move |c: CallContext, _v: u32| {
                    let _ = tx.send(c.sender_addr());
                    async {}
                }),
            )
            .unwrap();
        let stray = Transport::bind(TransportConfig::default()).await.unwrap();
        let payload = crate::codec::encode(&7u32).unwrap();
        let header = wire::RelayHeader {
            cmd: 9,
            fingerprint: 0,
            limit: 2,
            reliable: true,
            origin: member.addr(),
        };
        let relay = wire::relay(&header, &[], &payload);
        stray.send(a.addr(), 0, relay).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap();
        assert_eq!(seen, Some(stray.local_addr()));
        member.stop().await;
        a.stop().await;
    }
}
