//! The transport handle and its driver task.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::Clock;
use super::socket::{MeshSocket, RecvBatch};
use crate::rudp::hash::FastMap;
use crate::rudp::{Counters, Endpoint, Event, MessageId, PeerCounters, SendError, Transmit};

mod delivery;
mod task;
mod types;

pub use delivery::Delivery;
use delivery::Slot;

use task::drive;
pub use types::{PeerEvent, Received, TransportConfig, TransportError};

struct State {
    ep: Endpoint,
    /// Outcome slots of the messages whose [`Delivery`] is alive (dropping it removes its
    /// slot: a message nobody waits for costs no allocation and no wake-up).
    deliveries: FastMap<MessageId, Slot>,
    buf: Vec<u8>,
    /// Receive buffers, used by whichever task reads the socket (the driver, or a task
    /// waiting in [`Transport::recv`]).
    batch: RecvBatch,
    /// Deadline the driver is sleeping towards.
    armed: Option<Instant>,
    /// The socket refused a write: the driver waits for writability and retries.
    blocked: bool,
    /// A receiver handled datagrams and left the flush to the driver.
    flush_pending: bool,
    /// Messages queued since the last flush whose write was left to the driver.
    deferred: u32,
}

struct Inner {
    state: Mutex<State>,
    /// Every "now" and every timer deadline of the driver comes from here.
    clock: Clock,
    socket: MeshSocket,
    gso: usize,
    /// Who to wake when the socket becomes readable (and the driver's waker, also woken for
    /// a socket refusing writes, a flush left to it, a deadline moved earlier: the state
    /// change comes first, under the state lock; the driver registers at the start of every
    /// poll, before it looks at the state).
    wakers: Arc<ReadWakers>,
    /// `wakers` as a `Waker`, registered in the socket's read-readiness slot.
    read_waker: Waker,
    /// The driver was woken and has not yet re-read the state: it will re-arm its timer
    /// anyway, so a flush need not work out whether a deadline moved earlier.
    driver_pending: AtomicBool,
    incoming: Notify,
    room: Notify,
    /// Tasks waiting in [`Transport::queue`] for room (`room` is notified only if any).
    room_waiters: AtomicUsize,
    /// Deliveries dropped while the state was locked; their slots are removed by a flush.
    dropped: Mutex<Vec<MessageId>>,
    has_dropped: AtomicBool,
    events: broadcast::Sender<PeerEvent>,
    closed: AtomicBool,
}

/// The waker registered for the socket's read readiness: it wakes the task waiting in
/// [`Transport::recv`] (if any) first, so that it reads the datagrams itself, and the driver
/// (which reads them if nobody else did, and re-arms its timer). One registration slot and no
/// waiter list: registering again costs a comparison.
#[derive(Default)]
struct ReadWakers {
    receiver: AtomicWaker,
    driver: AtomicWaker,
}

impl std::task::Wake for ReadWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.receiver.wake();
        self.driver.wake();
    }
}

/// Uncounts a task waiting for queue room when its wait ends (or is cancelled).
struct RoomWaiter<'a>(&'a AtomicUsize);

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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

impl Drop for Inner {
    fn drop(&mut self) {
        // Deliveries still waited for resolve as closed (their futures see the transport gone).
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for slot in st.deliveries.values_mut() {
            slot.finish(Slot::Closed);
        }
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
        Self::bind_with_clock(config, Clock::system()).await
    }

    /// [`bind`](Self::bind), with the protocol's time read from `clock` (a
    /// [`Clock::manual`] lets a test fire the timers when it chooses).
    pub async fn bind_with_clock(
        config: TransportConfig,
        clock: Clock,
    ) -> Result<Transport, TransportError> {
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
        let wakers = Arc::new(ReadWakers::default());
        let inner = Arc::new(Inner {
            clock,
            state: Mutex::new(State {
                ep,
                deliveries: FastMap::default(),
                buf: Vec::with_capacity(64 * 1024),
                batch: RecvBatch::new(),
                armed: None,
                blocked: false,
                flush_pending: false,
                deferred: 0,
            }),
            socket,
            gso,
            read_waker: Waker::from(wakers.clone()),
            wakers,
            driver_pending: AtomicBool::new(false),
            incoming: Notify::new(),
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            dropped: Mutex::new(Vec::new()),
            has_dropped: AtomicBool::new(false),
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

    /// Strict membership: reads datagrams only from `members` (and from peers this node
    /// opened a session to); `None` reads from anyone. See
    /// [`Endpoint::restrict_to_members`](crate::rudp::Endpoint::restrict_to_members).
    pub fn restrict_to_members(&self, members: Option<Vec<SocketAddr>>) {
        lock(&self.inner.state).ep.restrict_to_members(members);
    }

    /// Whether the transport was started with a cluster key.
    pub(crate) fn has_keyring(&self) -> bool {
        lock(&self.inner.state).ep.keyring().is_some()
    }

    /// The ids of the cluster keys installed, the one in use first (empty without a key).
    pub fn key_ids(&self) -> Vec<crate::rudp::KeyId> {
        lock(&self.inner.state)
            .ep
            .keyring()
            .map(|r| r.ids())
            .unwrap_or_default()
    }

    /// Changes the installed cluster keys (see [`Keyring`](crate::rudp::Keyring)). A
    /// transport started without a key has none to change.
    pub fn change_keys(
        &self,
        change: impl FnOnce(&mut crate::rudp::Keyring) -> Result<(), crate::rudp::KeyError>,
    ) -> Result<(), crate::rudp::KeyError> {
        let mut st = lock(&self.inner.state);
        match st.ep.keyring_mut() {
            Some(ring) => change(ring),
            None => Err(crate::rudp::KeyError::NoKeyring),
        }
    }

    /// The MAC of a discovery record under the cluster key in use (`None` without a key).
    pub(crate) fn record_mac(&self, record: &[u8]) -> Option<[u8; 16]> {
        lock(&self.inner.state)
            .ep
            .keyring()
            .map(|r| r.record_mac(record))
    }

    /// Whether `mac` authenticates a discovery record under an installed cluster key
    /// (`None` without a key).
    pub(crate) fn check_record_mac(&self, record: &[u8], mac: &[u8]) -> Option<bool> {
        lock(&self.inner.state)
            .ep
            .keyring()
            .map(|r| r.check_record_mac(record, mac))
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        lock(&self.inner.state).ep.counters().clone()
    }

    /// What the session with each peer carried and measured (RTT smoothed and p99, packets
    /// and losses, bytes each way), one entry per session.
    pub fn peers(&self) -> Vec<PeerCounters> {
        lock(&self.inner.state).ep.peers().collect()
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
        // Counted before the check below (under the state lock), so a delivery that frees
        // room after the check sees the count and notifies.
        self.inner.room_waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = RoomWaiter(&self.inner.room_waiters);
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
        let now = self.inner.clock.now();
        Ok(match self.enqueue(&mut st, now, peer, channel, data)? {
            Ok(q) => Ok(self.delivery(&mut st, now, peer, q)),
            Err((_, data)) => Err(data),
        })
    }

    /// Puts `data` in the endpoint's queue for `peer`; a full queue hands it back.
    fn enqueue(
        &self,
        st: &mut State,
        now: Instant,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<Result<Queued, (SendError, Bytes)>, TransportError> {
        let busy = st.ep.queued_bytes(peer) > 0;
        match st.ep.send_or_return(now, peer, channel, data) {
            Ok(id) => Ok(Ok(Queued { id, busy })),
            Err((full @ SendError::Full { .. }, data)) => Ok(Err((full, data))),
            Err((e, _)) => Err(e.into()),
        }
    }

    fn delivery(&self, st: &mut State, now: Instant, peer: SocketAddr, q: Queued) -> Delivery {
        st.deliveries.insert(q.id, Slot::Pending(None));
        self.write_or_defer(st, now, peer, q.busy);
        Delivery {
            peer,
            id: q.id,
            inner: Arc::downgrade(&self.inner),
            finished: false,
        }
    }

    /// Writes a message just queued for `peer` now, or leaves it to the driver.
    fn write_or_defer(&self, st: &mut State, now: Instant, peer: SocketAddr, busy: bool) {
        if busy && st.deferred < DEFER_MAX {
            st.deferred += 1;
            // Earlier messages to this peer are still unacknowledged: the peer is busy with
            // a stream of them, not waiting for this one alone. Leave the write to the
            // driver, which runs when this task yields, so the messages queued meanwhile
            // share datagrams (one system call for many calls). A message to an idle peer
            // still goes out at once.
            st.flush_pending = true;
            self.inner.wake_driver();
        } else {
            self.inner.flush(st, now, Rearm::Peer(peer));
        }
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
        let now = self.inner.clock.now();
        match self.enqueue(&mut st, now, peer, channel, data)? {
            Ok(q) => Ok(self.delivery(&mut st, now, peer, q)),
            Err((full, _)) => Err(full.into()),
        }
    }

    /// Queues a reliable message that nobody waits for, without waiting: no [`Delivery`]
    /// is made (cheaper for responses and notifications). It is retransmitted until
    /// acknowledged like any other; if the peer fails, [`events`](Self::events) says so. A
    /// full queue is an error.
    pub fn try_queue_detached(
        &self,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<(), TransportError> {
        match self.queue_detached_or_return(peer, channel, data)? {
            Ok(()) => Ok(()),
            Err((full, _)) => Err(full.into()),
        }
    }

    /// [`try_queue_detached`](Self::try_queue_detached), handing `data` back if the peer's
    /// send queue is full (so the caller can wait for room without having kept a copy).
    pub(crate) fn queue_detached_or_return(
        &self,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<Result<(), (SendError, Bytes)>, TransportError> {
        self.check_open()?;
        let mut st = lock(&self.inner.state);
        let now = self.inner.clock.now();
        Ok(match self.enqueue(&mut st, now, peer, channel, data)? {
            Ok(q) => {
                self.write_or_defer(&mut st, now, peer, q.busy);
                Ok(())
            }
            Err(full) => Err(full),
        })
    }

    /// Sends an unreliable datagram (at most one datagram's payload; no retransmission).
    pub fn send_unreliable(&self, peer: SocketAddr, data: Bytes) -> Result<(), TransportError> {
        self.check_open()?;
        let mut st = lock(&self.inner.state);
        let now = self.inner.clock.now();
        st.ep.send_datagram(now, peer, data)?;
        self.inner.flush(&mut st, now, Rearm::Peer(peer));
        Ok(())
    }

    /// Receives the next message from any peer. Taking it returns flow-control credit to
    /// its sender.
    ///
    /// While it waits, the calling task reads the socket itself when datagrams arrive (the
    /// driver task reads it too, for acknowledgements and when nobody is receiving): a
    /// request is then answered without a hand-over from the driver task to this one.
    pub async fn recv(&self) -> Result<Received, TransportError> {
        let (m, owed) = self.recv_inner(false).await?;
        debug_assert!(!owed);
        Ok(m)
    }

    /// Waits for a message, then hands it and every other message already waiting to `f`
    /// (which must not block), and only then lets the driver flush what arriving had made
    /// due. A dispatcher that answers or wakes its callers from `f` thus has its answers
    /// (which carry the acknowledgements) written before the driver would send bare ones.
    pub async fn recv_with(&self, mut f: impl FnMut(Received)) -> Result<(), TransportError> {
        let (m, owed) = self.recv_inner(true).await?;
        f(m);
        while let Ok(Some(m)) = self.try_recv() {
            f(m);
        }
        if owed {
            self.inner.wake_driver();
        }
        Ok(())
    }

    async fn recv_inner(&self, defer: bool) -> Result<(Received, bool), TransportError> {
        loop {
            let notified = self.inner.incoming.notified();
            tokio::pin!(notified);
            {
                self.check_open()?;
                let mut st = lock(&self.inner.state);
                if let Some(m) = self.inner.take_message(&mut st) {
                    return Ok((m, false));
                }
                // Messages are announced under the lock: registered here, none is missed.
                notified.as_mut().enable();
            }
            let got = std::future::poll_fn(|cx| {
                self.inner.wakers.receiver.register(cx.waker());
                let mut read_cx = Context::from_waker(&self.inner.read_waker);
                if let Poll::Ready(Ok(())) = self.inner.socket.poll_recv_ready(&mut read_cx) {
                    // Readable: read one batch here. If it held no message for us, let other
                    // tasks (the driver among them) run before looking again.
                    return match self.inner.read_for_recv(defer) {
                        Ok(Some(m)) => Poll::Ready(Ok(Some((m, defer)))),
                        Ok(None) => {
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                        Err(e) => Poll::Ready(Err(e)),
                    };
                }
                // Not readable (or a socket error, which the driver reports): wait for
                // readiness or for a message another task delivered (or the close).
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(None));
                }
                Poll::Pending
            })
            .await;
            // No longer waiting: readiness should not wake this task (another receiver may
            // have registered since; it then waits for the incoming notification instead).
            drop(self.inner.wakers.receiver.take());
            if let Some(m) = got? {
                return Ok(m);
            }
        }
    }

    /// Bytes sent to any peer and not yet acknowledged (zero once everything was delivered or
    /// failed).
    pub fn unacknowledged(&self) -> u64 {
        lock(&self.inner.state).ep.total_queued_bytes()
    }

    /// Bytes sent and not yet acknowledged to the peers `keep` selects.
    pub fn unacknowledged_to(&self, keep: impl Fn(SocketAddr) -> bool) -> u64 {
        lock(&self.inner.state)
            .ep
            .unacked_by_peer()
            .filter(|(p, _)| keep(*p))
            .map(|(_, n)| n)
            .sum()
    }

    /// Receives a message if one is waiting.
    pub fn try_recv(&self) -> Result<Option<Received>, TransportError> {
        self.check_open()?;
        let mut st = lock(&self.inner.state);
        Ok(self.inner.take_message(&mut st))
    }

    /// Closes the session with `peer`: messages in flight to it fail as closed.
    pub fn close_peer(&self, peer: SocketAddr) {
        let mut st = lock(&self.inner.state);
        st.ep.close(peer);
        self.inner
            .flush(&mut st, self.inner.clock.now(), Rearm::Peer(peer));
    }

    /// Stops the driver; pending deliveries fail with [`TransportError::Closed`].
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self._guard.0.abort();
        let mut st = lock(&self.inner.state);
        for slot in st.deliveries.values_mut() {
            slot.finish(Slot::Closed);
        }
        drop(st);
        self.inner.incoming.notify_waiters();
        self.inner.room.notify_waiters();
    }
}

/// How many messages in a row may leave their write to the driver before one writes them
/// all: the receiver then starts on the first ones while the sender writes the next, instead
/// of waiting for a whole burst.
const DEFER_MAX: u32 = 16;

/// A message just put in the endpoint's queue.
struct Queued {
    id: MessageId,
    /// The peer already had messages outstanding (see `write_or_defer`).
    busy: bool,
}

/// Which timers a [`Inner::flush`] may have moved earlier than the driver's sleep.
#[derive(Debug, Clone, Copy)]
enum Rearm {
    /// Called by the driver task, which re-arms its sleep before it waits again.
    Driver,
    /// Called by another task after touching the session with this peer.
    Peer(SocketAddr),
    /// Called by another task after handling datagrams: any session may have changed.
    All,
}

impl Inner {
    fn wake_driver(&self) {
        self.driver_pending.store(true, Ordering::Relaxed);
        self.wakers.driver.wake();
    }

    /// Reads one batch from the socket (if it is readable) and handles it. Returns how many
    /// datagrams were read; 0 when the socket had nothing (its readiness is then cleared).
    fn read_batch(&self, st: &mut State, now: Instant) -> io::Result<usize> {
        let n = match self.socket.try_recv_batch(&mut st.batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let State {
            ep,
            batch,
            buf,
            blocked,
            ..
        } = st;
        for (from, d) in batch.iter() {
            ep.handle(now, from, d);
            if ep.ack_overdue() && !*blocked {
                // A long batch: acknowledge what came so far before handling the rest.
                self.write_out(ep, buf, blocked, now);
            }
        }
        Ok(n)
    }

    /// Writes everything the endpoint has to send until it has nothing more or the socket
    /// refuses (the driver then retries when it is writable).
    fn write_out(&self, ep: &mut Endpoint, buf: &mut Vec<u8>, blocked: &mut bool, now: Instant) {
        while let Some(t) = ep.poll_transmit(now, buf, self.gso) {
            if !self.try_write(t, buf, blocked) {
                break;
            }
        }
    }

    /// Writes one transmit. False when the socket refused it for now (`blocked` is set).
    fn try_write(&self, t: Transmit, buf: &[u8], blocked: &mut bool) -> bool {
        match self.socket.try_send(t.destination, buf, t.segment_size) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The endpoint counts these packets as sent: loss recovery resends them.
                *blocked = true;
                self.wake_driver();
                false
            }
            Err(e) => {
                tracing::debug!(peer = %t.destination, error = %e, "send failed");
                true
            }
        }
    }

    /// [`Transport::recv`] found the socket readable: reads a batch and takes the first
    /// message, if any.
    fn read_for_recv(&self, defer: bool) -> Result<Option<Received>, TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let mut st = lock(&self.state);
        let now = self.clock.now();
        match self.read_batch(&mut st, now) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "receive error");
                return Ok(None);
            }
        }
        let Some(m) = st.ep.poll_message() else {
            self.flush(&mut st, now, Rearm::All);
            return Ok(None);
        };
        if st.ep.pending_messages() > 0 {
            self.incoming.notify_one();
        }
        // The rest (acknowledgements and data the batch let out, events, timers) is the
        // driver's, which runs as soon as this task yields: the message reaches the caller
        // first, and its answer usually carries the acknowledgement.
        st.flush_pending = true;
        drop(st);
        if !defer {
            self.wake_driver();
        }
        Ok(Some(Received {
            from: m.peer,
            channel: m.channel,
            data: m.data,
            incarnation: m.incarnation,
        }))
    }

    /// Takes the next message, sends a credit update if that made one due, and passes the
    /// word on if more messages wait.
    fn take_message(&self, st: &mut State) -> Option<Received> {
        let m = st.ep.poll_message()?;
        if st.ep.credit_update_due() {
            self.flush(st, self.clock.now(), Rearm::Peer(m.peer));
        } else if st.ep.pending_messages() > 0 {
            self.incoming.notify_one();
        }
        Some(Received {
            from: m.peer,
            channel: m.channel,
            data: m.data,
            incarnation: m.incarnation,
        })
    }

    /// Writes what the endpoint has to send, dispatches its events, and wakes the driver if
    /// a deadline moved earlier than the one its sleep is armed for. Called with the state
    /// locked.
    fn flush(&self, st: &mut State, now: Instant, rearm: Rearm) {
        st.deferred = 0;
        // A driver about to run re-arms anyway (the flag is cleared, under the lock, before
        // it reads the deadlines).
        let rearm = if self.driver_pending.load(Ordering::Relaxed) {
            Rearm::Driver
        } else {
            rearm
        };
        // Deadlines can only have moved for the touched session and the sessions written to.
        let mut earliest = match rearm {
            Rearm::Peer(p) => st.ep.poll_timeout_for(p),
            Rearm::Driver | Rearm::All => None,
        };
        if !st.blocked {
            let mut buf = std::mem::take(&mut st.buf);
            while let Some(t) = st.ep.poll_transmit(now, &mut buf, self.gso) {
                if let Rearm::Peer(p) = rearm
                    && p != t.destination
                    && let Some(d) = st.ep.poll_timeout_for(t.destination)
                {
                    earliest = Some(earliest.map_or(d, |e| e.min(d)));
                }
                if !self.try_write(t, &buf, &mut st.blocked) {
                    break;
                }
            }
            st.buf = buf;
        }
        self.dispatch(st);
        if let Rearm::All = rearm {
            earliest = st.ep.poll_timeout();
        }
        if earliest.is_some_and(|n| st.armed.is_none_or(|a| n < a)) {
            // The driver registers its waker before it reads `armed`: nothing is missed.
            self.wake_driver();
        }
    }

    fn dispatch(&self, st: &mut State) {
        if self.has_dropped.swap(false, Ordering::AcqRel) {
            let ids = std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|p| p.into_inner()));
            for id in ids {
                st.deliveries.remove(&id);
            }
        }
        let mut room = false;
        while let Some(e) = st.ep.poll_event() {
            match e {
                Event::Delivered { id, .. } => {
                    room = true;
                    if let Some(slot) = st.deliveries.get_mut(&id) {
                        slot.finish(Slot::Done(Ok(())));
                    }
                }
                Event::Failed { id, error, .. } => {
                    room = true;
                    if let Some(slot) = st.deliveries.get_mut(&id) {
                        slot.finish(Slot::Done(Err(error)));
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
        if room && self.room_waiters.load(Ordering::Relaxed) > 0 {
            self.room.notify_waiters();
        }
        if st.ep.pending_messages() > 0 {
            self.incoming.notify_one();
        }
    }
}
