//! Relay messages waiting for room in a next hop's send queue, in order.
//!
//! When a hop's queue is full, a relay message waits; a later fan-out through the same hop
//! must not overtake it when room comes back (the transport wakes every waiter at once, in
//! no order). So each hop with waiting messages gets a first-in, first-out queue, drained by
//! one task; a message for a hop whose queue is not empty goes behind the others even if
//! there is room. The messages waiting, over all hops, are bounded in bytes; past the bound
//! a relay message fails (and is counted) instead of piling up.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::lock;
use crate::rudp::SendError;
use crate::rudp::hash::FastMap;
use crate::transport::{Delivery, Transport, TransportError};

/// Bytes of relay messages that may wait over all hops.
pub(crate) const HOP_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;

/// What a waiting relay message learns once it is queued on the transport.
pub(crate) type Queued = oneshot::Receiver<Result<Delivery, TransportError>>;

struct Waiting {
    channel: u8,
    /// Taken by the drainer while it waits for room for it.
    data: Option<Bytes>,
    done: oneshot::Sender<Result<Delivery, TransportError>>,
}

/// The queues of every hop with messages waiting.
#[derive(Default)]
pub(crate) struct HopQueues {
    inner: std::sync::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    hops: FastMap<SocketAddr, VecDeque<Waiting>>,
    bytes: u64,
}

impl std::fmt::Debug for HopQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopQueues").finish_non_exhaustive()
    }
}

/// Where [`HopQueues::send`] put a message.
pub(crate) enum Sent {
    /// On the transport now.
    Queued(Delivery),
    /// Behind others (or waiting for room): resolves when it is on the transport.
    Behind(Queued),
}

impl HopQueues {
    /// Queues `data` to `hop` now if nothing waits for that hop and there is room; else
    /// behind what waits. Refuses (as a full queue) past [`HOP_BACKLOG_BYTES`].
    pub(crate) fn send(
        self: &Arc<Self>,
        transport: &Transport,
        hop: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<Sent, TransportError> {
        let mut inner = lock(&self.inner);
        let data = if inner.hops.contains_key(&hop) {
            data
        } else {
            match transport.try_queue(hop, channel, data.clone()) {
                Ok(d) => return Ok(Sent::Queued(d)),
                Err(TransportError::Send(SendError::Full { .. })) => data,
                Err(e) => return Err(e),
            }
        };
        let n = data.len() as u64;
        if inner.bytes + n > HOP_BACKLOG_BYTES {
            return Err(TransportError::Send(SendError::Full {
                peer: hop,
                queued: inner.bytes,
            }));
        }
        inner.bytes += n;
        let (done, rx) = oneshot::channel();
        let item = Waiting {
            channel,
            data: Some(data),
            done,
        };
        match inner.hops.get_mut(&hop) {
            Some(q) => q.push_back(item),
            None => {
                inner.hops.insert(hop, VecDeque::from([item]));
                tokio::spawn(self.clone().drain(transport.clone(), hop));
            }
        }
        Ok(Sent::Behind(rx))
    }

    /// Moves `hop`'s waiting messages onto the transport, one at a time, in order.
    async fn drain(self: Arc<Self>, transport: Transport, hop: SocketAddr) {
        loop {
            let next = {
                let mut inner = lock(&self.inner);
                let Some(q) = inner.hops.get_mut(&hop) else {
                    return;
                };
                q.front_mut()
                    .and_then(|w| Some((w.channel, w.data.take()?)))
            };
            let Some((channel, data)) = next else {
                // Nothing left (cannot happen: an empty queue is removed below).
                lock(&self.inner).hops.remove(&hop);
                return;
            };
            let n = data.len() as u64;
            let result = transport.queue(hop, channel, data).await;
            let mut inner = lock(&self.inner);
            inner.bytes = inner.bytes.saturating_sub(n);
            let Some(q) = inner.hops.get_mut(&hop) else {
                return;
            };
            if let Some(w) = q.pop_front() {
                let _ = w.done.send(result);
            }
            if q.is_empty() {
                inner.hops.remove(&hop);
                return;
            }
        }
    }

    /// Bytes waiting over all hops.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        lock(&self.inner).bytes
    }
}
