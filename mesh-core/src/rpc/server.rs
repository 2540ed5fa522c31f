//! The serving side: running handlers for requests and one-way messages, with deadlines,
//! cancellation, a concurrency limit, and panics caught.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::cancel::Cancel;
use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::handler::{CallContext, Reply};
use super::meter::CommandMeter;
use super::registry::Entry;
use super::scope::{self, Scope, TraceContext};
use super::wire::{Mismatch, RequestHeader, Status};
use super::{Rpc, lock};
use crate::discovery::BoxFuture;

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// A handler's future, still to run on a task of its own.
type Waiting = BoxFuture<'static, Reply>;

/// Calls a handler and polls its future once, here, on the transport's task, catching a
/// panic: a handler that answers at once costs no task. One that has to wait is handed back
/// to run on a task of its own; whatever it registered the no-op waker with is registered
/// again by that task's first poll, which always happens, so no wake-up is lost.
fn first_poll(call: impl FnOnce() -> Waiting) -> std::thread::Result<Result<Reply, Waiting>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut fut = call();
        match fut.poll_unpin(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(reply) => Ok(reply),
            Poll::Pending => Err(fut),
        }
    }))
}

fn oneway_panicked(span: &tracing::Span, p: &(dyn std::any::Any + Send)) {
    let _in = span.enter();
    tracing::error!(message = %panic_message(p), "one-way handler panicked; the node keeps running");
}

impl Rpc {
    pub(crate) fn context(
        &self,
        from: SocketAddr,
        command: u16,
        deadline: Option<Instant>,
        cancel: Cancel,
        trace: Option<TraceContext>,
    ) -> CallContext {
        CallContext {
            from,
            sender: std::sync::OnceLock::new(),
            membership: self.membership.clone(),
            command,
            deadline,
            cancel,
            oneway: trace.is_none(),
            trace,
        }
    }

    /// Checks a request against the registry and the access schema: the entry, or the
    /// reply refusing it.
    fn admit(&self, from: SocketAddr, cmd: u16, fingerprint: u32) -> Result<Entry, Reply> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Reply::failure(Status::ShuttingDown, "shutting down"));
        }
        let Some(entry) = self.entry(cmd) else {
            return Err(Reply::failure(Status::NoHandler, ""));
        };
        if from != self.local && !self.settings.access.is_open() {
            let view = self.membership.view();
            let caller = view.by_addr(from).map(|r| r.node_type.as_str());
            if !self.settings.access.allows(caller, cmd, entry.service) {
                tracing::debug!(%from, caller_type = ?caller, command = cmd, "refused by the access schema");
                return Err(Reply::failure(Status::Forbidden, ""));
            }
        }
        if fingerprint != 0 && entry.fingerprint != 0 && fingerprint != entry.fingerprint {
            self.counters.incompatible.fetch_add(1, Ordering::Relaxed);
            let detail = Mismatch {
                service: entry.service.to_string(),
                method: entry.method.to_string(),
                sent: fingerprint,
                served: entry.fingerprint,
            };
            return Err(Reply {
                status: Status::Incompatible,
                payload: detail.encode().into(),
            });
        }
        Ok(entry)
    }

    /// Runs the handler of a request and answers it.
    pub(crate) fn on_request(
        self: &Arc<Self>,
        from: SocketAddr,
        incarnation: u64,
        h: RequestHeader,
        payload: Bytes,
    ) {
        let RequestHeader {
            cmd,
            id,
            deadline_ms,
            fingerprint,
            trace,
        } = h;
        let span = super::debug_span(
            || tracing::debug_span!("request", %from, command = cmd, id, trace_id = %format_args!("{:032x}", trace.trace_id), parent_id = %format_args!("{:016x}", trace.parent_id)),
        );
        // The caller's span (over OpenTelemetry) is this span's parent.
        super::otel::adopt(&span, &trace);
        let refuse = |reply: Reply| self.respond(from, id, reply);
        let entry = match self.admit(from, cmd, fingerprint) {
            Ok(e) => e,
            Err(reply) => {
                tracing::debug!(parent: &span, status = ?reply.status, "request refused");
                return refuse(reply);
            }
        };
        if deadline_ms == 0 {
            return refuse(Reply::failure(Status::Expired, ""));
        }
        if self.backlogged() {
            tracing::debug!(parent: &span, "responses backlogged: request refused");
            return refuse(Reply::failure(Status::Overloaded, ""));
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(parent: &span, "overloaded: request refused");
            return refuse(Reply::failure(Status::Overloaded, ""));
        };
        // Cancelled by the caller, or at the end of the drain (see `Rpc::drain`).
        let cancel = Cancel::new();
        {
            let mut running = lock(&self.running);
            if running.contains_key(&(from, incarnation, id)) {
                // The same request twice (a caller bug or a replay): never run it twice.
                return;
            }
            running.insert((from, incarnation, id), cancel.clone());
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(deadline_ms));
        let ctx = self.context(from, cmd, Some(deadline), cancel.clone(), Some(trace));
        let scope = Scope {
            deadline: Some(deadline),
            trace,
        };
        let served = entry.served;
        let started = served.meter.start();
        let first = {
            let _in = span.enter();
            scope::enter(scope, || first_poll(|| served.handler.call(ctx, payload)))
        };
        let key = (from, incarnation, id);
        let fut = match first {
            Ok(Ok(reply)) => {
                return self.finish(key, permit, span, (&served.meter, started), Some(Ok(reply)));
            }
            Err(p) => {
                return self.finish(key, permit, span, (&served.meter, started), Some(Err(p)));
            }
            Ok(Err(fut)) => fut,
        };
        let this = self.clone();
        let task_span = span.clone();
        tokio::spawn(
            async move {
                let run = AssertUnwindSafe(scope::within(scope, fut)).catch_unwind();
                let outcome = tokio::select! {
                    biased;
                    r = run => Some(r),
                    _ = cancel.cancelled() => None,
                    () = tokio::time::sleep_until(deadline.into()) => None,
                };
                // The answer is for the process that asked. If another one runs at that
                // address now (the caller restarted while the handler ran), it would take
                // it for the answer to its own request with the same id. (A handler that
                // answers at once, on the receiving task, cannot be overtaken so.)
                let outcome = if this.caller_restarted(from, incarnation) {
                    None
                } else {
                    outcome
                };
                this.finish(key, permit, span, (&served.meter, started), outcome);
            }
            .instrument(task_span),
        );
    }

    /// Whether the process at `from` is no longer incarnation `incarnation`.
    fn caller_restarted(&self, from: SocketAddr, incarnation: u64) -> bool {
        let restarted = incarnation != 0
            && self
                .transport
                .peer_incarnation(from)
                .is_some_and(|now| now != incarnation);
        if restarted {
            tracing::debug!(%from, "the caller restarted: its answer is dropped");
        }
        restarted
    }

    /// Ends a request: forgets it, returns its permit, and answers it (`None`: cancelled or
    /// past its deadline, no answer).
    fn finish(
        self: &Arc<Self>,
        (from, incarnation, id): (SocketAddr, u64, u64),
        permit: OwnedSemaphorePermit,
        span: tracing::Span,
        (meter, started): (&CommandMeter, Option<Instant>),
        outcome: Option<std::thread::Result<Reply>>,
    ) {
        let _in = span.enter();
        meter.done(
            started,
            matches!(&outcome, Some(Ok(r)) if r.status == Status::Ok),
        );
        lock(&self.running).remove(&(from, incarnation, id));
        // The handler is done: its permit goes back before the response is acknowledged
        // (the drain at stop waits for responses separately).
        drop(permit);

        match outcome {
            Some(Ok(reply)) => {
                tracing::debug!(status = ?reply.status, "request handled");
                self.respond(from, id, reply);
            }
            Some(Err(p)) => {
                let message = panic_message(p.as_ref());
                tracing::error!(%message, "handler panicked; the node keeps running");
                self.respond(from, id, Reply::failure(Status::Panicked, message));
            }
            None => tracing::debug!("request cancelled or past its deadline: no response"),
        }
    }

    /// Runs the handler of a one-way message (no response).
    pub(crate) fn on_oneway(
        self: &Arc<Self>,
        from: SocketAddr,
        cmd: u16,
        fingerprint: u32,
        payload: Bytes,
    ) {
        let entry = match self.admit(from, cmd, fingerprint) {
            Ok(e) => e,
            Err(reply) => {
                self.counters.dropped_oneway.fetch_add(1, Ordering::Relaxed);
                if reply.status == Status::Incompatible {
                    let detail = Mismatch::decode(&reply.payload);
                    tracing::warn!(%from, command = cmd, ?detail, "one-way message dropped: incompatible signature");
                } else {
                    tracing::debug!(%from, command = cmd, status = ?reply.status, "one-way message dropped");
                }
                return;
            }
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.counters.dropped_oneway.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, command = cmd, "overloaded: one-way message dropped");
            return;
        };
        let cancel = self.handlers_stop.child();
        let ctx = self.context(from, cmd, None, cancel.clone(), None);
        let span = super::debug_span(|| tracing::debug_span!("oneway", %from, command = cmd));
        let served = entry.served;
        let started = served.meter.start();
        let first = {
            let _in = span.enter();
            first_poll(|| served.handler.call(ctx, payload))
        };
        let fut = match first {
            Ok(Ok(r)) => return served.meter.done(started, r.status == Status::Ok),
            Err(p) => {
                served.meter.done(started, false);
                return oneway_panicked(&span, p.as_ref());
            }
            Ok(Err(fut)) => fut,
        };
        let task_span = span.clone();
        tokio::spawn(
            async move {
                let ok = tokio::select! {
                    biased;
                    r = AssertUnwindSafe(fut).catch_unwind() => match r {
                        Ok(r) => r.status == Status::Ok,
                        Err(p) => {
                            oneway_panicked(&span, p.as_ref());
                            false
                        }
                    },
                    _ = cancel.cancelled() => false,
                };
                served.meter.done(started, ok);
                drop(permit);
            }
            .instrument(task_span),
        );
    }

    /// Runs a request on this node without the network (a call to itself).
    pub(crate) async fn call_local(
        self: &Arc<Self>,
        cmd: u16,
        fingerprint: u32,
        timeout: Duration,
        trace: TraceContext,
        payload: Bytes,
    ) -> Reply {
        // A call to itself is always allowed.
        let entry = match self.admit(self.local, cmd, fingerprint) {
            Ok(e) => e,
            Err(r) => return r,
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Reply::failure(Status::Overloaded, "");
        };
        let cancel = self.handlers_stop.child();
        let deadline = Instant::now() + timeout;
        let ctx = self.context(self.local, cmd, Some(deadline), cancel.clone(), Some(trace));
        let scope = Scope {
            deadline: Some(deadline),
            trace,
        };
        // Run it on its own task, as a remote call would, so a panic stays contained and the
        // caller's cancellation (dropping this future) stops it too.
        let guard = cancel.clone().drop_guard();
        let served = entry.served;
        let task = tokio::spawn(async move {
            let started = served.meter.start();
            let handler = served.handler.clone();
            let run = AssertUnwindSafe(scope::within(scope, async move {
                handler.call(ctx, payload).await
            }))
            .catch_unwind();
            let r = tokio::select! {
                r = run => match r {
                    Ok(reply) => reply,
                    Err(p) => Reply::failure(Status::Panicked, panic_message(p.as_ref())),
                },
                _ = cancel.cancelled() => Reply::failure(Status::Expired, ""),
                // The call's deadline, as a remote call has it (see `expire_calls`).
                () = tokio::time::sleep(timeout) => Reply::failure(Status::Expired, ""),
            };
            served.meter.done(started, r.status == Status::Ok);
            drop(permit);
            r
        });
        let r = match task.await {
            Ok(r) => r,
            Err(e) => Reply::failure(Status::Panicked, e.to_string()),
        };
        guard.disarm();
        r
    }
}

#[cfg(test)]
mod restart_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use crate::rpc::scope::TraceContext;
    use crate::rpc::wire::{self, Envelope, RequestHeader};
    use crate::rpc::{CallContext, handler};
    use crate::transport::{Transport, TransportConfig};
    use crate::{Discovery, LocalRegistry, Mesh};

    fn request(cmd: u16, id: u64) -> bytes::Bytes {
        let h = RequestHeader {
            cmd,
            id,
            deadline_ms: 10_000,
            fingerprint: 0,
            trace: TraceContext {
                trace_id: 1,
                parent_id: 1,
                flags: 0,
            },
        };
        wire::request(&h, &crate::codec::encode(&5u32).unwrap())
    }

    /// A caller that restarts at the same address numbers its requests from 1 again: its
    /// first request is served even while its predecessor's request with the same id still
    /// runs (security finding 12: before, it was dropped as a duplicate), and the
    /// predecessor's handler is then cancelled.
    #[tokio::test]
    async fn a_restarted_caller_reusing_a_request_id_is_served() {
        let reg = LocalRegistry::new();
        let server = Mesh::builder()
            .discovery(Discovery::local_registry(&reg))
            .shutdown_timeout(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
        let (cancelled_tx, mut cancelled) = tokio::sync::mpsc::unbounded_channel();
        let _slow = server
            .handle(
                7,
                handler(move |c: CallContext, _v: u32| {
                    let _ = started.send(());
                    let cancelled_tx = cancelled_tx.clone();
                    async move {
                        tokio::select! {
                            () = c.cancelled() => {
                                let _ = cancelled_tx.send(());
                            }
                            () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        }
                        0u32
                    }
                }),
            )
            .unwrap();
        let _fast = server
            .handle(8, handler(|_c: CallContext, v: u32| async move { v + 1 }))
            .unwrap();
        let first = Transport::bind(TransportConfig::default()).await.unwrap();
        let at = first.local_addr();
        first.send(server.addr(), 0, request(7, 1)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), running.recv())
            .await
            .unwrap();
        first.close();
        drop(first);
        // The same address, a new process (a new incarnation), the same request id. (The
        // old socket closes with its driver task, soon; until then the bind moves on.)
        let mut again = None;
        for _ in 0..200 {
            let t = Transport::bind(TransportConfig::default().bind(at))
                .await
                .unwrap();
            if t.local_addr().port() == at.port() {
                again = Some(t);
                break;
            }
            t.close();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = again.expect("the port was freed");
        again.send(server.addr(), 0, request(8, 1)).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), again.recv())
            .await
            .expect("the restarted caller got its answer")
            .unwrap();
        match wire::decode(m.data).unwrap() {
            Envelope::Response { id, payload, .. } => {
                assert_eq!(id, 1);
                assert_eq!(crate::codec::decode::<u32>(&payload).unwrap(), 6);
            }
            other => panic!("{other:?}"),
        }
        // The predecessor's request is cancelled once the restart is known: nobody waits
        // for its answer.
        tokio::time::timeout(Duration::from_secs(5), cancelled.recv())
            .await
            .expect("the old incarnation's handler was cancelled");
        server.stop().await;
    }
}
