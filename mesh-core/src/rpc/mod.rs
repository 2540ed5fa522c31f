//! Messaging on u16 command ids: handlers, request/response with deadlines and cancellation,
//! one-way and unreliable messages, relay fan-out, broadcast-collect and balanced calls.
//!
//! The typed front-ends are the clients `#[mesh_service]` generates; the untyped ones, of the
//! same shape, are [`Client`] (one node: by id, address, or a balanced or random pick by
//! type) and [`Broadcast`] (many nodes: collect every answer, or a one-way message through
//! the relay tree). This module also holds the machinery, the [`CallError`] every call fails
//! with, the handler builders, and how deadlines and traces travel ([`TraceContext`]).

mod access;
mod broadcast;
mod cancel;
mod client;
mod error;
mod fanout;
mod handler;
mod hop_queue;
mod meter;
mod otel;
pub(crate) mod process;
pub(crate) mod reflect;
mod registry;
mod scope;
mod select;
mod server;
pub(crate) mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use access::{ANY_CALLER, AccessRule, AccessSchema};
pub use broadcast::Broadcast;
pub use client::{Client, Command, Destination};
pub use error::{CallError, CodecStage, Incompatibility, NoMesh, RegisterError, Side, Unreachable};
pub use handler::{
    CallContext, Handler, Method, Reply, Service, fallible_handler, handler, raw_handler,
};
pub use meter::{CommandStats, HANDLER_SECONDS};
pub(crate) use process::register as register_process_mesh;
pub use process::{Messaging, Via};
pub use reflect::{
    ArgDescription, CMD_CALL_JSON, CMD_PING, CMD_REFLECT, CMD_STATS, JsonHandler,
    MAX_JSON_CALL_BYTES, MethodDescription, MethodKind, MethodSchema, Reflection,
    ServiceDescription, TOOLS_SERVICE, ToolRefusal, json_fallible_handler, json_handler,
};
pub use registry::RESERVED_START;
pub use scope::{TraceContext, current_trace};
pub use wire::fingerprint;

use crate::discovery::Membership;
use crate::rudp::hash::FastMap;
use crate::transport::Transport;
use registry::{Entry, Registry};

/// Bytes the messaging envelope may add around a payload (the transport's limit is the
/// configured `max_message_size` plus this).
pub(crate) const ENVELOPE_HEADROOM: usize = 64;

/// Messages above this size travel on the bulk channel so they never delay small ones.
pub(crate) const BULK_THRESHOLD: usize = 16 * 1024;
/// The transport channel for small messages.
pub(crate) const CH_SMALL: u8 = 0;
/// The transport channel for large messages.
pub(crate) const CH_BULK: u8 = 1;

/// Times out pending calls at their deadlines: one timer for all calls, moved only when a
/// call has an earlier deadline than any pending one (calls with the same timeout never move
/// it), instead of a timer per call.
pub(crate) async fn expire_calls(rpc: Arc<Rpc>, stop: CancellationToken) {
    loop {
        let next = *lock(&rpc.armed);
        tokio::select! {
            _ = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                rpc.expire(tokio::time::Instant::now());
            }
            _ = rpc.rearm.notified() => {}
            _ = stop.cancelled() => break,
        }
    }
}

/// A per-message span, built only when a subscriber wants debug spans (building one costs
/// several hundred instructions when the `log` bridge is compiled in, even with no logger).
pub(crate) fn debug_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tracing::enabled!(tracing::Level::DEBUG) {
        make()
    } else {
        tracing::Span::none()
    }
}

pub(crate) fn channel_for(len: usize) -> u8 {
    if len > BULK_THRESHOLD {
        CH_BULK
    } else {
        CH_SMALL
    }
}

/// How a pending call ended, before typing.
#[derive(Debug)]
pub(crate) enum Outcome {
    Response(wire::Status, Bytes),
    Failed(CallError<Bytes>),
}

pub(crate) struct Pending {
    pub(crate) peer: SocketAddr,
    pub(crate) incarnation: Option<u64>,
    pub(crate) command: u16,
    pub(crate) target: crate::node::Target,
    /// The caller's waker, then the outcome until the caller takes it.
    pub(crate) wait: Wait,
    /// When the call times out (enforced by [`expire_calls`]).
    pub(crate) deadline: tokio::time::Instant,
    /// The call's timeout, for the error.
    pub(crate) timeout: Duration,
}

/// Where a pending call stands: the map entry is its own one-shot channel (no allocation
/// per call).
pub(crate) enum Wait {
    /// No outcome yet; the waker of the task that waits for it.
    Waiting(Option<Waker>),
    /// The outcome, not yet taken by the caller.
    Done(Outcome),
}

impl Pending {
    fn is_waiting(&self) -> bool {
        matches!(self.wait, Wait::Waiting(_))
    }

    /// Records the outcome; the waker to wake once the map's lock is released.
    fn finish(&mut self, outcome: Outcome) -> Option<Waker> {
        match std::mem::replace(&mut self.wait, Wait::Done(outcome)) {
            Wait::Waiting(w) => w,
            Wait::Done(first) => {
                // The first outcome stands.
                self.wait = Wait::Done(first);
                None
            }
        }
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// Counters of the messaging layer.
#[derive(Debug, Default)]
pub(crate) struct RpcCounters {
    pub(crate) malformed: AtomicU64,
    pub(crate) unknown_response: AtomicU64,
    pub(crate) dropped_oneway: AtomicU64,
    pub(crate) dropped_discovery: AtomicU64,
    pub(crate) incompatible: AtomicU64,
    pub(crate) dropped_responses: AtomicU64,
    pub(crate) dropped_relays: AtomicU64,
}

impl RpcCounters {
    pub(crate) fn snapshot(&self) -> RpcStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RpcStats {
            malformed: get(&self.malformed),
            unknown_responses: get(&self.unknown_response),
            dropped_oneway: get(&self.dropped_oneway),
            dropped_discovery: get(&self.dropped_discovery),
            incompatible: get(&self.incompatible),
            dropped_responses: get(&self.dropped_responses),
            dropped_relays: get(&self.dropped_relays),
        }
    }
}

/// What the messaging layer of a node dropped or refused since it started
/// ([`Mesh::stats`](crate::Mesh::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RpcStats {
    /// Messages that were not a valid envelope.
    pub malformed: u64,
    /// Responses nobody waited for (late, after a timeout or cancel, or forged).
    pub unknown_responses: u64,
    /// One-way messages (relayed ones included) not run: no handler, overloaded, shutting
    /// down or incompatible.
    pub dropped_oneway: u64,
    /// Discovery messages dropped because the discovery task was behind.
    pub dropped_discovery: u64,
    /// Requests and one-way messages refused because their signature fingerprint differs
    /// from the handler's (the sender was built with another signature of the method).
    pub incompatible: u64,
    /// Responses dropped because the response backlog (responses waiting for room in
    /// full send queues, bounded in bytes and count) was full; their callers time out.
    pub dropped_responses: u64,
    /// Relay messages this node did not pass on: it was overloaded when a relay arrived,
    /// or the relay backlog (messages waiting for room at full next hops) was full. The
    /// nodes behind it in the relay tree miss that fan-out.
    pub dropped_relays: u64,
}

/// Settings of the messaging layer.
#[derive(Debug, Clone)]
pub(crate) struct RpcSettings {
    pub(crate) default_timeout: Duration,
    pub(crate) max_concurrent: usize,
    /// The largest envelope (the transport's limit: the configured size plus headroom).
    pub(crate) max_message_size: usize,
    pub(crate) relay_limit: usize,
    pub(crate) peer_timeout: Duration,
    pub(crate) max_unreliable: usize,
    pub(crate) access: AccessSchema,
    /// Handler time goes to the metrics recorder (see [`HANDLER_SECONDS`]).
    pub(crate) metrics: bool,
}

/// How a command is named in figures: `Service.method`, or the method alone.
fn command_name(service: &str, method: &str) -> String {
    if service.is_empty() {
        method.to_string()
    } else {
        format!("{service}.{method}")
    }
}

/// The messaging state of one node.
pub(crate) struct Rpc {
    pub(crate) transport: Transport,
    pub(crate) membership: Membership,
    pub(crate) local: SocketAddr,
    pub(crate) settings: RpcSettings,
    registry: RwLock<Registry>,
    pending: Mutex<FastMap<u64, Pending>>,
    /// The earliest deadline of a pending call, as the expiry task is armed for (taken
    /// after `pending` when both are needed).
    armed: Mutex<Option<tokio::time::Instant>>,
    /// Wakes the expiry task when a call has an earlier deadline than it is armed for.
    rearm: tokio::sync::Notify,
    next_id: AtomicU64,
    /// Requests being served, by caller address, caller incarnation and request id: a
    /// restarted caller's requests (ids counting from 1 again) are not its predecessor's.
    running: Mutex<FastMap<(SocketAddr, u64, u64), cancel::Cancel>>,
    pub(crate) permits: Arc<Semaphore>,
    accepting: AtomicBool,
    /// Cancels every running handler (after the drain bound at stop).
    handlers_stop: cancel::Cancel,
    pub(crate) counters: RpcCounters,
    /// Round-robin positions of balanced calls, per (node type, command).
    balance: Mutex<FastMap<(String, u16), usize>>,
    /// Responses waiting for room in full send queues.
    pub(crate) backlog: Backlog,
    /// Relay messages waiting for room in their next hop's queue, in order per hop.
    pub(crate) hop_queues: Arc<hop_queue::HopQueues>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Rpc {
    pub(crate) fn new(
        transport: Transport,
        membership: Membership,
        settings: RpcSettings,
    ) -> Arc<Rpc> {
        let local = membership.local_id().addr;
        Arc::new(Rpc {
            transport,
            membership,
            local,
            permits: Arc::new(Semaphore::new(settings.max_concurrent)),
            settings,
            registry: RwLock::new(Registry::default()),
            pending: Mutex::new(FastMap::default()),
            armed: Mutex::new(None),
            rearm: tokio::sync::Notify::new(),
            next_id: AtomicU64::new(1),
            running: Mutex::new(FastMap::default()),
            accepting: AtomicBool::new(true),
            handlers_stop: cancel::Cancel::new(),
            counters: RpcCounters::default(),
            balance: Mutex::new(FastMap::default()),
            backlog: Backlog::default(),
            hop_queues: Arc::default(),
        })
    }

    /// What each registered command served, by command id.
    pub(crate) fn command_stats(&self) -> Vec<CommandStats> {
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<CommandStats> = registry
            .entries()
            .map(|(cmd, e)| {
                let (served, served_errors) = e.served.meter.read();
                CommandStats {
                    command: *cmd,
                    name: command_name(e.service, e.method),
                    served,
                    served_errors,
                }
            })
            .collect();
        v.sort_unstable_by_key(|c| c.command);
        v
    }

    /// Calls of this node waiting for their response.
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.pending).len()
    }

    fn entry(&self, cmd: u16) -> Option<Entry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(cmd)
            .cloned()
    }

    /// Registers handlers (all or none) and publishes what the node serves.
    pub(crate) fn register(
        &self,
        service: &'static str,
        methods: Vec<Method>,
        allow_reserved: bool,
    ) -> Result<u64, RegisterError> {
        self.register_with(service, methods, Vec::new(), allow_reserved)
    }

    /// Registers handlers (all or none) with what they say about themselves (matched by
    /// command id; a schema for no method is ignored), and publishes what the node serves.
    pub(crate) fn register_with(
        &self,
        service: &'static str,
        methods: Vec<Method>,
        schemas: Vec<MethodSchema>,
        allow_reserved: bool,
    ) -> Result<u64, RegisterError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(RegisterError::Stopped);
        }
        let schemas: FastMap<u16, Arc<MethodSchema>> =
            schemas.into_iter().map(|s| (s.id, Arc::new(s))).collect();
        let items = methods
            .into_iter()
            .map(|m| {
                (
                    m.id,
                    Entry {
                        served: Arc::new(meter::Served {
                            meter: meter::CommandMeter::new(
                                m.id,
                                &command_name(service, m.name),
                                self.settings.metrics,
                            ),
                            handler: m.handler,
                        }),
                        fingerprint: m.fingerprint,
                        service,
                        method: m.name,
                        token: 0,
                    },
                )
            })
            .collect();
        let token = self
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add_all(items, schemas, allow_reserved)?;
        self.publish_services();
        Ok(token)
    }

    pub(crate) fn unregister(&self, token: u64) {
        self.registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove_token(token);
        self.publish_services();
    }

    fn publish_services(&self) {
        let (commands, services) = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .advertised();
        self.membership.update_local(|r| {
            r.commands = commands;
            r.services = services;
        });
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Fails every pending call to `peer` (or only those sent to incarnation `old`).
    pub(crate) fn fail_peer(
        &self,
        peer: SocketAddr,
        only_incarnation: Option<u64>,
        make: impl Fn(&Pending) -> CallError<Bytes>,
    ) {
        let mut wakers = Vec::new();
        for p in lock(&self.pending).values_mut() {
            if p.is_waiting()
                && p.peer == peer
                && only_incarnation.is_none_or(|old| p.incarnation == Some(old))
            {
                let e = make(p);
                tracing::debug!(peer = %peer, command = p.command, error = ?e, "pending call failed");
                wakers.extend(p.finish(Outcome::Failed(e)));
            }
        }
        wake_all(wakers);
    }

    /// Puts right what lost transport events would have: members marked unreachable that
    /// the transport talks to again become reachable, and calls waiting on a process the
    /// transport now knows under another incarnation fail as `Restarted`. Called when the
    /// peer-event channel lagged (events were dropped).
    pub(crate) fn resync_after_lag(&self) {
        let back: Vec<SocketAddr> = self
            .membership
            .view()
            .unreachable()
            .filter(|a| self.transport.peer_incarnation(*a).is_some())
            .collect();
        for addr in back {
            self.membership.set_reachable(addr, true);
        }
        let mut wakers = Vec::new();
        for p in lock(&self.pending).values_mut() {
            let Some(old) = p.incarnation else { continue };
            match self.transport.peer_incarnation(p.peer) {
                Some(new) if new != old && p.is_waiting() => {
                    let e = CallError::Restarted {
                        target: p.target.clone(),
                        command: p.command,
                        old,
                        new,
                    };
                    tracing::debug!(peer = %p.peer, command = p.command, "pending call failed after lost events");
                    wakers.extend(p.finish(Outcome::Failed(e)));
                }
                _ => {}
            }
        }
        wake_all(wakers);
    }

    /// Cancels the handlers still running for requests of incarnation `old` of the process
    /// at `peer`: it restarted, nobody waits for their answers (they could not reach the
    /// new process anyway), and their permits go back.
    pub(crate) fn cancel_requests_of(&self, peer: SocketAddr, old: u64) {
        let gone: Vec<cancel::Cancel> = {
            let mut running = lock(&self.running);
            let keys: Vec<(SocketAddr, u64, u64)> = running
                .keys()
                .filter(|(a, inc, _)| *a == peer && *inc == old)
                .copied()
                .collect();
            keys.iter().filter_map(|k| running.remove(k)).collect()
        };
        if !gone.is_empty() {
            tracing::debug!(%peer, old = format_args!("{old:#x}"), handlers = gone.len(), "caller restarted: cancelling its requests");
        }
        for c in gone {
            c.cancel();
        }
    }

    /// Peers with calls waiting for a response (for liveness probes).
    pub(crate) fn pending_peers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = lock(&self.pending)
            .values()
            .filter(|p| p.is_waiting())
            .map(|p| p.peer)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether the node still takes requests (it has not begun to stop).
    pub(crate) fn is_running(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Stops taking requests: new ones are answered "shutting down".
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Waits until running handlers are done, at most `bound`, then cancels the rest; fails
    /// every pending outgoing call.
    pub(crate) async fn drain(&self, bound: Duration) {
        let max = u32::try_from(self.settings.max_concurrent).unwrap_or(u32::MAX);
        let until = tokio::time::Instant::now() + bound;
        let all = self.permits.acquire_many(max);
        if tokio::time::timeout_at(until, all).await.is_err() {
            tracing::warn!(
                running = lock(&self.running).len(),
                "handlers still running after the shutdown bound: cancelling them"
            );
        }
        // Let the last responses be acknowledged before the socket closes: by the peers
        // that are still members and reachable. Data to a node that left (or that the
        // transport gave up on) is never acknowledged, and must not hold the stop up until
        // the transport declares that peer gone (peer_timeout).
        while (self.unacknowledged_to_live_peers() > 0 || self.backlog.len() > 0)
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.handlers_stop.cancel();
        for t in lock(&self.running).values() {
            t.cancel();
        }
        let wakers: Vec<Waker> = lock(&self.pending)
            .values_mut()
            .filter_map(|p| {
                p.finish(Outcome::Failed(CallError::ShuttingDown {
                    side: Side::Local,
                }))
            })
            .collect();
        wake_all(wakers);
    }

    /// Bytes not yet acknowledged by peers that are listed in the view and reachable.
    pub(crate) fn unacknowledged_to_live_peers(&self) -> u64 {
        let view = self.membership.view();
        self.transport
            .unacknowledged_to(|peer| view.by_addr(peer).is_some() && view.is_reachable(peer))
    }

    /// Handles one message from the transport.
    pub(crate) fn on_message(self: &Arc<Self>, from: SocketAddr, incarnation: u64, data: Bytes) {
        let env = match wire::decode(data) {
            Ok(e) => e,
            Err(e) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, error = %e, "dropped a malformed message");
                return;
            }
        };
        match env {
            wire::Envelope::Request { header, payload } => {
                self.on_request(from, incarnation, header, payload)
            }
            wire::Envelope::Response {
                id,
                status,
                payload,
            } => self.on_response(from, incarnation, id, status, payload),
            wire::Envelope::OneWay {
                cmd,
                fingerprint,
                payload,
            } => self.on_oneway(from, cmd, fingerprint, payload),
            wire::Envelope::Cancel { id } => {
                if let Some(t) = lock(&self.running).remove(&(from, incarnation, id)) {
                    tracing::debug!(%from, id, "request cancelled by the caller");
                    t.cancel();
                }
            }
            wire::Envelope::Relay {
                cmd,
                fingerprint,
                limit,
                reliable,
                origin,
                targets,
                payload,
            } => {
                let header = wire::RelayHeader {
                    cmd,
                    fingerprint,
                    limit,
                    reliable,
                    origin,
                };
                self.on_relay(from, header, targets, payload)
            }
            wire::Envelope::Ping => {}
        }
    }

    fn on_response(
        &self,
        from: SocketAddr,
        incarnation: u64,
        id: u64,
        status: wire::Status,
        payload: Bytes,
    ) {
        let woken = {
            let mut pending = lock(&self.pending);
            match pending.get_mut(&id) {
                // The answer of another process at the same address than the one the call
                // was for (it restarted between the check before sending and the answer):
                // not this call's answer.
                Some(p)
                    if p.peer == from
                        && p.is_waiting()
                        && incarnation != 0
                        && p.incarnation.is_some_and(|want| want != incarnation) =>
                {
                    let error = CallError::Restarted {
                        target: p.target.clone(),
                        command: p.command,
                        old: p.incarnation.unwrap_or_default(),
                        new: incarnation,
                    };
                    tracing::debug!(%from, id, "an answer from another incarnation than the one called");
                    Some(p.finish(Outcome::Failed(error)))
                }
                Some(p) if p.peer == from && p.is_waiting() => {
                    Some(p.finish(Outcome::Response(status, payload)))
                }
                _ => None,
            }
        };
        match woken {
            Some(w) => w.into_iter().for_each(Waker::wake),
            None => {
                // Late (after a timeout or cancel), a duplicate, or forged: nobody waits for it.
                self.counters
                    .unknown_response
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The outcome of call `id` once there is one (`None`: the call is not known, which
    /// only a stopped node can cause); until then the task is woken when it comes.
    pub(crate) fn poll_outcome(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        let mut pending = lock(&self.pending);
        let Some(p) = pending.get_mut(&id) else {
            return Poll::Ready(None);
        };
        match &mut p.wait {
            Wait::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Wait::Done(_) => match pending.remove(&id).map(|p| p.wait) {
                Some(Wait::Done(o)) => Poll::Ready(Some(o)),
                _ => Poll::Ready(None),
            },
        }
    }

    pub(crate) fn insert_pending(&self, id: u64, p: Pending) {
        let deadline = p.deadline;
        let mut pending = lock(&self.pending);
        pending.insert(id, p);
        let mut armed = lock(&self.armed);
        if armed.is_none_or(|a| deadline < a) {
            *armed = Some(deadline);
            self.rearm.notify_one();
        }
    }

    /// Fails the calls whose deadline passed; returns the next deadline to wake for.
    fn expire(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let mut wakers = Vec::new();
        let mut next: Option<tokio::time::Instant> = None;
        {
            let mut pending = lock(&self.pending);
            for p in pending.values_mut().filter(|p| p.is_waiting()) {
                if p.deadline <= now {
                    let e = CallError::Timeout {
                        target: p.target.clone(),
                        command: p.command,
                        after: p.timeout,
                    };
                    tracing::debug!(command = p.command, target = %p.target, "call timed out");
                    wakers.extend(p.finish(Outcome::Failed(e)));
                } else if next.is_none_or(|n| p.deadline < n) {
                    next = Some(p.deadline);
                }
            }
            *lock(&self.armed) = next;
        }
        wake_all(wakers);
        next
    }

    /// Records which incarnation a call reached (once its request was acknowledged).
    pub(crate) fn set_pending_incarnation(&self, id: u64, incarnation: Option<u64>) {
        if let Some(p) = lock(&self.pending).get_mut(&id)
            && p.incarnation.is_none()
        {
            p.incarnation = incarnation;
        }
    }

    /// Forgets call `id`; whether it was still waiting for its outcome.
    pub(crate) fn remove_pending(&self, id: u64) -> bool {
        lock(&self.pending)
            .remove(&id)
            .is_some_and(|p| p.is_waiting())
    }

    /// Encodes a response and queues it without waiting (a full send queue hands it to a
    /// task that waits for room). Nobody waits for its acknowledgement here; the drain at
    /// stop waits until everything sent is acknowledged.
    pub(crate) fn respond(self: &Arc<Self>, to: SocketAddr, id: u64, reply: Reply) {
        let max = self.settings.max_message_size;
        let reply = if reply.payload.len() + wire::RESPONSE_HEADER > max {
            Reply {
                status: wire::Status::TooLarge,
                payload: wire::too_large_detail(reply.payload.len() as u64, max as u64).into(),
            }
        } else {
            reply
        };
        let bytes = reply.payload.into_response(id, reply.status);
        let ch = channel_for(bytes.len());
        match self.transport.queue_detached_or_return(to, ch, bytes) {
            Ok(Ok(())) => {}
            Ok(Err((_full, bytes))) => {
                // The peer's send queue is full: wait for room, within the backlog's bound.
                let n = bytes.len() as u64;
                if !self.backlog.reserve(n) {
                    self.counters
                        .dropped_responses
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%to, id, "response backlog full: response dropped (the caller times out)");
                    return;
                }
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.transport.queue(to, ch, bytes).await {
                        tracing::debug!(%to, id, error = %e, "response not sent");
                    }
                    this.backlog.release(n);
                });
            }
            Err(e) => tracing::debug!(%to, id, error = %e, "response not sent"),
        }
    }

    /// Whether responses are piling up behind full send queues: new requests are then
    /// refused as overloaded (back-pressure) rather than run into a backlog.
    pub(crate) fn backlogged(&self) -> bool {
        self.backlog.over_half()
    }
}

/// Bytes of responses that may wait for room in full send queues, across all peers.
pub(crate) const RESPONSE_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;
/// Responses that may wait so, across all peers.
pub(crate) const RESPONSE_BACKLOG_COUNT: u64 = 4096;

/// Responses waiting for room in full send queues (each on a task), counted against a
/// bound: past it a response is dropped and counted, never queued without end.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    bytes: AtomicU64,
    count: AtomicU64,
}

impl Backlog {
    fn reserve(&self, n: u64) -> bool {
        let bytes = self.bytes.fetch_add(n, Ordering::AcqRel) + n;
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if bytes > RESPONSE_BACKLOG_BYTES || count > RESPONSE_BACKLOG_COUNT {
            self.release(n);
            return false;
        }
        true
    }

    fn release(&self, n: u64) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    fn over_half(&self) -> bool {
        self.bytes.load(Ordering::Acquire) > RESPONSE_BACKLOG_BYTES / 2
            || self.count.load(Ordering::Acquire) > RESPONSE_BACKLOG_COUNT / 2
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod backlog_tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;

    use super::{Pending, RESPONSE_BACKLOG_BYTES, Reply, Wait};
    use crate::transport::{Transport, TransportConfig};
    use crate::{Discovery, LocalRegistry, Mesh, NodeId, Target};

    /// A call to `Target::Node` at `peer`, made for `incarnation`, waiting for its answer.
    fn waiting(peer: std::net::SocketAddr, incarnation: u64) -> Pending {
        Pending {
            peer,
            incarnation: Some(incarnation),
            command: 5,
            target: Target::Node(NodeId::new(peer, incarnation)),
            wait: Wait::Waiting(None),
            deadline: tokio::time::Instant::now() + Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        }
    }

    /// Responses to a peer whose send queue is full wait in a bounded backlog: past the
    /// bound they are dropped and counted (security finding 3: before, each one got a task
    /// of its own, without limit), and new requests are refused as overloaded meanwhile.
    #[tokio::test]
    async fn responses_behind_a_full_send_queue_are_bounded() {
        let reg = LocalRegistry::new();
        let a = Mesh::builder()
            .discovery(Discovery::local_registry(&reg))
            .shutdown_timeout(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        let peer = Transport::bind(TransportConfig::default()).await.unwrap();
        let rpc = a.rpc().clone();
        let body = Bytes::from(vec![0u8; 1_000_000]);
        for id in 0..300 {
            rpc.respond(peer.local_addr(), id, Reply::ok(body.clone()));
        }
        let dropped = rpc.counters.dropped_responses.load(Ordering::Relaxed);
        assert!(dropped > 0, "nothing dropped");
        assert!(rpc.backlog.bytes() <= RESPONSE_BACKLOG_BYTES);
        assert!(rpc.backlog.len() > 0 && rpc.backlogged());
        // 32 MiB fit the send queue, 64 MiB the backlog: the rest is dropped.
        assert_eq!(dropped, 300 - 33 - 67);
        assert_eq!(a.stats().rpc.dropped_responses, dropped);
        a.stop().await;
        peer.close();
    }

    /// A response is taken only from the incarnation the call was for: one from a process
    /// that restarted at the same address after the check before sending fails the call as
    /// `Restarted` (security finding 13: before, the new process's answer was accepted).
    #[tokio::test]
    async fn an_answer_from_another_incarnation_fails_the_call() {
        use super::{Outcome, wire};
        use crate::rpc::CallError;

        let reg = LocalRegistry::new();
        let a = Mesh::test_node(&reg).await;
        let rpc = a.rpc().clone();
        let peer: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        for (id, from_incarnation, restarted) in
            [(1u64, 0x22u64, true), (2, 0x11, false), (3, 0, false)]
        {
            rpc.insert_pending(id, waiting(peer, 0x11));
            let body = wire::response(id, wire::Status::Ok, b"x");
            rpc.on_message(peer, from_incarnation, body);
            let outcome = std::future::poll_fn(|cx| rpc.poll_outcome(id, cx)).await;
            match outcome {
                Some(Outcome::Failed(CallError::Restarted { old, new, .. })) => {
                    assert!(restarted);
                    assert_eq!((old, new), (0x11, 0x22));
                }
                Some(Outcome::Response(..)) => assert!(!restarted, "call {id}"),
                _ => panic!("call {id}: unexpected outcome"),
            }
        }
        a.stop().await;
    }

    /// After lost peer events, a call waiting on a process the transport now knows under
    /// another incarnation fails as `Restarted` instead of waiting for its deadline
    /// (security finding 14).
    #[tokio::test]
    async fn a_resync_after_lost_events_fails_calls_to_a_restarted_peer() {
        use super::Outcome;
        use crate::rpc::CallError;

        let reg = LocalRegistry::new();
        let a = Mesh::test_node(&reg).await;
        let peer = Transport::bind(TransportConfig::default()).await.unwrap();
        peer.send(a.addr(), 1, Bytes::from_static(b"hi"))
            .await
            .unwrap();
        let rpc = a.rpc().clone();
        let now = peer.incarnation();
        let at = peer.local_addr();
        for (id, called) in [(1u64, now ^ 1), (2, now)] {
            rpc.insert_pending(id, waiting(at, called));
        }
        rpc.resync_after_lag();
        let first = std::future::poll_fn(|cx| rpc.poll_outcome(1, cx)).await;
        assert!(matches!(
            first,
            Some(Outcome::Failed(CallError::Restarted { new, .. })) if new == now
        ));
        let second =
            std::future::poll_fn(|cx| std::task::Poll::Ready(rpc.poll_outcome(2, cx).is_pending()))
                .await;
        assert!(second, "the call to the live incarnation still waits");
        a.stop().await;
        peer.close();
    }
}
