//! The transport handle and its driver task.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::socket::{MeshSocket, RecvBatch, SocketConfig, SocketError};
use crate::rudp::hash::FastMap;
use crate::rudp::{
    self, ConfigError, Counters, Endpoint, Event, Failure, MessageId, RejectReason, SendError,
    UnreachableReason,
};

/// Configuration of a [`Transport`]: where to bind and the protocol tunables.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Socket binding.
    pub socket: SocketConfig,
    /// Protocol tunables.
    pub protocol: rudp::Config,
}

impl TransportConfig {
    /// Binds to `addr` (port 0 = any free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.socket.address = Some(addr.ip());
        self.socket.port = addr.port();
        self
    }

    /// Sets the protocol configuration.
    pub fn protocol(mut self, protocol: rudp::Config) -> Self {
        self.protocol = protocol;
        self
    }
}

/// What can go wrong with the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The socket could not be bound or configured.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The protocol configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The message could not be queued.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The message was queued but failed.
    #[error("message to {peer} failed: {failure}")]
    Failed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        failure: Failure,
    },
    /// The transport was closed.
    #[error("the transport is closed")]
    Closed,
}

/// A change in a peer's state, as seen by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A session is established.
    Up {
        /// The peer.
        peer: SocketAddr,
        /// Its incarnation.
        incarnation: u64,
    },
    /// The peer restarted (new incarnation at the same address).
    Restarted {
        /// The peer.
        peer: SocketAddr,
        /// Previous incarnation.
        old: u64,
        /// New incarnation.
        new: u64,
    },
    /// The peer is unreachable.
    Unreachable {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: UnreachableReason,
    },
    /// The peer and we cannot talk (other cluster, wire version).
    Incompatible {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: RejectReason,
    },
    /// We refused a message from the peer as too large.
    Refused {
        /// The peer.
        peer: SocketAddr,
        /// The refused size.
        size: u64,
    },
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sender.
    pub from: SocketAddr,
    /// The channel of a reliable message; `None` for an unreliable one.
    pub channel: Option<u8>,
    /// The payload.
    pub data: Bytes,
}

type Waiter = oneshot::Sender<Result<(), Failure>>;

struct State {
    ep: Endpoint,
    waiters: FastMap<MessageId, (SocketAddr, Waiter)>,
    buf: Vec<u8>,
    /// Deadline the driver is sleeping towards.
    armed: Option<Instant>,
    /// The socket refused a write: the driver waits for writability and retries.
    blocked: bool,
}

struct Inner {
    state: Mutex<State>,
    socket: MeshSocket,
    gso: usize,
    wake_driver: Notify,
    incoming: Notify,
    room: Notify,
    events: broadcast::Sender<PeerEvent>,
    closed: AtomicBool,
}

/// Aborts the driver when the last [`Transport`] handle goes.
struct DriverGuard(JoinHandle<()>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A node's reliable-UDP transport. Clone it freely; the socket closes when the last clone
/// is dropped or [`close`](Self::close) is called.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
    _guard: Arc<DriverGuard>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

/// Resolves when the message is acknowledged by the peer, or with the reason it failed.
/// Dropping it does not cancel the message.
#[derive(Debug)]
pub struct Delivery {
    peer: SocketAddr,
    rx: oneshot::Receiver<Result<(), Failure>>,
}

impl Future for Delivery {
    type Output = Result<(), TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let peer = self.peer;
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(TransportError::Failed { peer, failure }),
            Err(_) => Err(TransportError::Closed),
        })
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the endpoint half-updated in a way that
    // matters more than stopping; keep going with the inner value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transport {
    /// Binds the socket and starts the driver task (on the current tokio runtime).
    pub async fn bind(config: TransportConfig) -> Result<Transport, TransportError> {
        config.protocol.validate()?;
        let socket = MeshSocket::bind(&config.socket)?;
        let incarnation = loop {
            let i: u64 = rand::random();
            if i != 0 {
                break i;
            }
        };
        let ep = Endpoint::new(config.protocol.clone(), incarnation, rand::random())?;
        // One GSO send carries at most 64 KiB of UDP payload.
        let gso = socket
            .max_gso_segments()
            .min(65_000 / config.protocol.max_datagram_size)
            .max(1);
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                ep,
                waiters: FastMap::default(),
                buf: Vec::with_capacity(64 * 1024),
                armed: None,
                blocked: false,
            }),
            socket,
            gso,
            wake_driver: Notify::new(),
            incoming: Notify::new(),
            room: Notify::new(),
            events,
            closed: AtomicBool::new(false),
        });
        let span = tracing::debug_span!("transport", local = %inner.socket.local_addr());
        tracing::debug!(parent: &span, incarnation = format_args!("{incarnation:#x}"), "transport started");
        let task = tokio::spawn(drive(inner.clone()).instrument(span));
        Ok(Transport {
            inner,
            _guard: Arc::new(DriverGuard(task)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.socket.local_addr()
    }

    /// The address peers should use.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.inner.socket.advertise_addr()
    }

    /// This process's random incarnation id.
    pub fn incarnation(&self) -> u64 {
        lock(&self.inner.state).ep.incarnation()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        lock(&self.inner.state).ep.counters().clone()
    }

    /// Subscribes to peer events (bounded: a slow subscriber misses old events).
    pub fn events(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    /// The incarnation of `peer` if a session is established.
    pub fn peer_incarnation(&self, peer: SocketAddr) -> Option<u64> {
        lock(&self.inner.state).ep.peer_incarnation(peer)
    }

    fn check_open(&self) -> Result<(), TransportError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(TransportError::Closed)
        } else {
            Ok(())
        }
    }

    /// Sends a reliable message and waits for the peer's acknowledgement.
    pub async fn send(
        &self,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<(), TransportError> {
        self.queue(peer, channel, data).await?.await
    }

    /// Queues a reliable message, waiting for room in the peer's send queue; the returned
    /// [`Delivery`] resolves on acknowledgement.
    pub async fn queue(
        &self,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<Delivery, TransportError> {
        // Common case: there is room, and the data moves in without a copy or a clone.
        let mut data = match self.queue_or_return(peer, channel, data)? {
            Ok(d) => return Ok(d),
            Err(data) => data,
        };
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Check again now that a notification cannot be missed.
            data = match self.queue_or_return(peer, channel, data)? {
                Ok(d) => return Ok(d),
                Err(data) => data,
            };
            room.await;
            self.check_open()?;
        }
    }

    /// Queues the message, or hands `data` back if the peer's send queue is full.
    fn queue_or_return(
        &self,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<Result<Delivery, Bytes>, TransportError> {
        self.check_open()?;
        let mut st = lock(&self.inner.state);
        if !st.ep.has_room(peer, data.len()) {
            return Ok(Err(data));
        }
        self.queue_locked(&mut st, peer, channel, data).map(Ok)
    }

    fn queue_locked(
        &self,
        st: &mut State,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<Delivery, TransportError> {
        let now = Instant::now();
        let id = st.ep.send(now, peer, channel, data)?;
        let (tx, rx) = oneshot::channel();
        st.waiters.insert(id, (peer, tx));
        self.inner.flush(st, now);
        Ok(Delivery { peer, rx })
    }

    /// Queues a reliable message without waiting: a full queue is an error.
    pub fn try_queue(
        &self,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<Delivery, TransportError> {
        self.check_open()?;
        let mut st = lock(&self.inner.state);
        self.queue_locked(&mut st, peer, channel, data)
    }

    /// Sends an unreliable datagram (at most one datagram's payload; no retransmission).
    pub fn send_unreliable(&self, peer: SocketAddr, data: Bytes) -> Result<(), TransportError> {
        self.check_open()?;
        let mut st = lock(&self.inner.state);
        let now = Instant::now();
        st.ep.send_datagram(now, peer, data)?;
        self.inner.flush(&mut st, now);
        Ok(())
    }

    /// Receives the next message from any peer. Taking it returns flow-control credit to
    /// its sender.
    pub async fn recv(&self) -> Result<Received, TransportError> {
        if let Some(m) = self.try_recv()? {
            return Ok(m);
        }
        loop {
            let notified = self.inner.incoming.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Check again now that a notification cannot be missed.
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
            notified.await;
        }
    }

    /// Receives a message if one is waiting.
    pub fn try_recv(&self) -> Result<Option<Received>, TransportError> {
        self.check_open()?;
        let mut st = lock(&self.inner.state);
        let m = st.ep.poll_message();
        if m.is_some() {
            // Credit updates may be due.
            self.inner.flush(&mut st, Instant::now());
            if st.ep.pending_messages() > 0 {
                self.inner.incoming.notify_one();
            }
        }
        Ok(m.map(|m| Received {
            from: m.peer,
            channel: m.channel,
            data: m.data,
        }))
    }

    /// Closes the session with `peer`: messages in flight to it fail as closed.
    pub fn close_peer(&self, peer: SocketAddr) {
        let mut st = lock(&self.inner.state);
        st.ep.close(peer);
        self.inner.flush(&mut st, Instant::now());
    }

    /// Stops the driver; pending deliveries fail with [`TransportError::Closed`].
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self._guard.0.abort();
        let mut st = lock(&self.inner.state);
        st.waiters.clear();
        self.inner.incoming.notify_waiters();
        self.inner.room.notify_waiters();
    }
}

impl Inner {
    fn on_batch(&self, batch: &RecvBatch) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        for (from, d) in batch.iter() {
            st.ep.handle(now, from, d);
        }
        self.flush(&mut st, now);
    }

    /// Writes what the endpoint has to send, dispatches its events, and re-arms the driver
    /// if the next deadline moved earlier. Called with the state locked.
    fn flush(&self, st: &mut State, now: Instant) {
        if !st.blocked {
            let mut buf = std::mem::take(&mut st.buf);
            while let Some(t) = st.ep.poll_transmit(now, &mut buf, self.gso) {
                match self.socket.try_send(t.destination, &buf, t.segment_size) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The endpoint counts these packets as sent: loss recovery resends them.
                        st.blocked = true;
                        self.wake_driver.notify_one();
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %t.destination, error = %e, "send failed");
                    }
                }
            }
            st.buf = buf;
        }
        self.dispatch(st);
        let next = st.ep.poll_timeout();
        if next.is_some_and(|n| st.armed.is_none_or(|a| n < a)) {
            self.wake_driver.notify_one();
        }
    }

    fn dispatch(&self, st: &mut State) {
        let mut room = false;
        while let Some(e) = st.ep.poll_event() {
            match e {
                Event::Delivered { id, .. } => {
                    room = true;
                    if let Some((_, w)) = st.waiters.remove(&id) {
                        let _ = w.send(Ok(()));
                    }
                }
                Event::Failed { id, error, .. } => {
                    room = true;
                    if let Some((_, w)) = st.waiters.remove(&id) {
                        let _ = w.send(Err(error));
                    }
                }
                Event::Connected { peer, incarnation } => {
                    let _ = self.events.send(PeerEvent::Up { peer, incarnation });
                }
                Event::Restarted { peer, old, new } => {
                    let _ = self.events.send(PeerEvent::Restarted { peer, old, new });
                }
                Event::Unreachable { peer, reason } => {
                    let _ = self.events.send(PeerEvent::Unreachable { peer, reason });
                }
                Event::Incompatible { peer, reason } => {
                    let _ = self.events.send(PeerEvent::Incompatible { peer, reason });
                }
                Event::Refused { peer, size, .. } => {
                    let _ = self.events.send(PeerEvent::Refused { peer, size });
                }
            }
        }
        if room {
            self.room.notify_waiters();
        }
        if st.ep.pending_messages() > 0 {
            self.incoming.notify_one();
        }
    }
}

async fn drive(inner: Arc<Inner>) {
    let mut batch = RecvBatch::new();
    let sleep = tokio::time::sleep(std::time::Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut reset_to: Option<Instant> = None;
    loop {
        let (deadline, blocked) = {
            let mut st = lock(&inner.state);
            let d = st.ep.poll_timeout();
            st.armed = d;
            (d, st.blocked)
        };
        if let Some(d) = deadline
            && reset_to != Some(d)
        {
            // Re-arming a timer costs a timer-wheel update: only when the deadline moved.
            sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            reset_to = Some(d);
        }
        tokio::select! {
            biased;
            r = inner.socket.recv_batch(&mut batch) => {
                match r {
                    Ok(_) => {
                        inner.on_batch(&batch);
                        // Let the application act on what arrived before reading the socket
                        // again: the answer to its answer is then often already there, which
                        // saves a readiness wait.
                        tokio::task::yield_now().await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "receive error");
                    }
                }
            }
            r = inner.socket.writable(), if blocked => {
                if r.is_ok() {
                    let mut st = lock(&inner.state);
                    st.blocked = false;
                    inner.flush(&mut st, Instant::now());
                }
            }
            _ = &mut sleep, if deadline.is_some() => {
                let mut st = lock(&inner.state);
                let now = Instant::now();
                st.ep.handle_timeout(now);
                inner.flush(&mut st, now);
            }
            _ = inner.wake_driver.notified() => {}
        }
    }
}
