//! The calling side: requests with deadlines, one exact error per failed call, cancellation
//! on drop, and the [`Client`] handle generated clients are built on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;

use super::error::{
    CallError, CodecStage, Incompatibility, Side, Unreachable, codec, incompatible,
};
use super::handler::Reply;
use super::process::{Route, Via};
use super::scope;
use super::wire::{self, Body, Status};
use super::{Outcome, Pending, Rpc, Wait, channel_for};
use crate::codec;
use crate::node::Target;
use crate::rudp::{Failure, SendError};
use crate::transport::TransportError;

/// A command id with the signature fingerprint the receiver checks (0: unchecked).
///
/// A bare `u16` converts into one, so untyped calls read `client.call(1000, &req)`;
/// generated clients pass their method's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Command {
    /// The command id.
    pub id: u16,
    /// Fingerprint of the method's signature (0: the receiver does not check it).
    pub fingerprint: u32,
}

impl Command {
    /// A command with no fingerprint.
    pub const fn new(id: u16) -> Command {
        Command { id, fingerprint: 0 }
    }

    /// The same command with a fingerprint the receiver checks (see [`fingerprint`](super::fingerprint)).
    pub const fn with_fingerprint(self, fingerprint: u32) -> Command {
        Command {
            id: self.id,
            fingerprint,
        }
    }
}

impl From<u16> for Command {
    fn from(id: u16) -> Command {
        Command::new(id)
    }
}

/// Sends a cancel if the call is dropped before it completes.
struct CallGuard<'a> {
    rpc: &'a Arc<Rpc>,
    id: u64,
    peer: SocketAddr,
    /// The request's channel: the cancel follows it there, so it can never overtake a
    /// large request (on the bulk channel) and arrive before it.
    channel: u8,
    armed: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.rpc.remove_pending(self.id) {
            // Best effort: if the queue is full the handler runs to its deadline.
            let _ = self.rpc.transport.try_queue_detached(
                self.peer,
                self.channel,
                wire::cancel(self.id),
            );
        }
    }
}

pub(crate) fn transport_error(
    target: &Target,
    command: u16,
    e: TransportError,
) -> CallError<Bytes> {
    let target = target.clone();
    match e {
        TransportError::Send(SendError::TooLarge { size, max }) => CallError::TooLarge {
            command,
            size: size as u64,
            max: max as u64,
            ran: false,
        },
        TransportError::Send(SendError::Overloaded { why, .. }) => CallError::Unreachable {
            target,
            command,
            reason: Unreachable::LocalLimit(why),
        },
        TransportError::Send(SendError::Full { .. }) => CallError::Unreachable {
            target,
            command,
            reason: Unreachable::LocalLimit("the send queue to the peer is full"),
        },
        TransportError::Failed { failure, .. } => match failure {
            Failure::Unreachable(r) => CallError::Unreachable {
                target,
                command,
                reason: Unreachable::Transport(r),
            },
            Failure::Restarted { old, new } => CallError::Restarted {
                target,
                command,
                old,
                new,
            },
            Failure::Incompatible(r) => incompatible(&target, command, r),
            Failure::TooLarge { size, max } => CallError::TooLarge {
                command,
                size,
                max,
                ran: false,
            },
        },
        TransportError::Closed => CallError::ShuttingDown { side: Side::Local },
        _ => CallError::Unreachable {
            target,
            command,
            reason: Unreachable::LocalLimit("the transport refused the message"),
        },
    }
}

fn from_reply(
    target: &Target,
    command: u16,
    timeout: Duration,
    r: Reply,
) -> Result<Bytes, CallError<Bytes>> {
    let t = || target.clone();
    let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    let malformed = || CallError::Codec {
        command,
        stage: CodecStage::DecodeResponse,
        error: format!("the {:?} status carried a malformed detail", r.status),
    };
    match r.status {
        Status::Ok => Ok(r.payload.into_bytes()),
        Status::Remote => Err(CallError::Remote(r.payload.into_bytes())),
        Status::NoHandler => Err(CallError::NoHandler {
            target: t(),
            command,
        }),
        Status::Forbidden => Err(CallError::Forbidden {
            target: t(),
            command,
        }),
        Status::Overloaded => Err(CallError::Overloaded {
            target: t(),
            command,
        }),
        Status::Panicked => Err(CallError::Panicked {
            target: t(),
            command,
            message: text(&r.payload),
        }),
        Status::Incompatible => match wire::Mismatch::decode(&r.payload) {
            Some(m) => Err(CallError::Incompatible {
                target: t(),
                command,
                reason: Incompatibility::Signature {
                    service: m.service,
                    method: m.method,
                    sent: m.sent,
                    served: m.served,
                },
            }),
            None => Err(malformed()),
        },
        Status::Codec => match wire::decode_codec_detail(&r.payload) {
            Some((stage, error)) => Err(CallError::Codec {
                command,
                stage,
                error,
            }),
            None => Err(malformed()),
        },
        Status::Expired => Err(CallError::Timeout {
            target: t(),
            command,
            after: timeout,
        }),
        Status::ShuttingDown => Err(CallError::ShuttingDown { side: Side::Remote }),
        Status::TooLarge => match wire::decode_too_large(&r.payload) {
            Some((size, max)) => Err(CallError::TooLarge {
                command,
                size,
                max,
                ran: true,
            }),
            None => Err(malformed()),
        },
    }
}

impl Rpc {
    pub(crate) async fn resolve(
        &self,
        target: &Target,
        command: u16,
    ) -> Result<SocketAddr, CallError<Bytes>> {
        if let Some(a) = target.addr() {
            return Ok(a);
        }
        let Target::HostPort(hp) = target else {
            return Err(CallError::Unreachable {
                target: target.clone(),
                command,
                reason: Unreachable::Resolve {
                    host: target.to_string(),
                    error: "no address".into(),
                },
            });
        };
        let want_v6 = self.local.is_ipv6();
        let found =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(hp.as_str()))
                .await
                .map_err(|_| "DNS lookup timed out".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .and_then(|mut it| {
                    let all: Vec<SocketAddr> = it.by_ref().collect();
                    all.iter()
                        .find(|a| a.is_ipv6() == want_v6)
                        .or(all.first())
                        .copied()
                        .ok_or_else(|| "no addresses".to_string())
                });
        found.map_err(|error| CallError::Unreachable {
            target: target.clone(),
            command,
            reason: Unreachable::Resolve {
                host: hp.clone(),
                error,
            },
        })
    }

    /// Whether `addr` is this node.
    pub(crate) fn is_local(&self, addr: SocketAddr) -> bool {
        addr == self.local || addr == self.transport.local_addr()
    }

    /// Checks a node-id target against what runs at its address now.
    fn check_incarnation(
        &self,
        target: &Target,
        addr: SocketAddr,
        command: u16,
    ) -> Result<(), CallError<Bytes>> {
        let Some(want) = target.incarnation() else {
            return Ok(());
        };
        let now = if self.is_local(addr) {
            Some(self.membership.local_id().incarnation)
        } else {
            self.transport.peer_incarnation(addr).or_else(|| {
                self.membership
                    .view()
                    .by_addr(addr)
                    .map(|r| r.id.incarnation)
            })
        };
        match now {
            Some(new) if new != want => Err(CallError::Restarted {
                target: target.clone(),
                command,
                old: want,
                new,
            }),
            _ => Ok(()),
        }
    }

    /// One request: the encoded response, or exactly one error.
    pub(crate) async fn call(
        self: &Arc<Self>,
        target: &Target,
        command: u16,
        fingerprint: u32,
        body: Body,
        timeout: Duration,
    ) -> Result<Bytes, CallError<Bytes>> {
        let span = super::debug_span(|| tracing::debug_span!("call", %target, command));
        async move {
            // The call's state (about 1.4 KB: timers, queue wait, delivery) lives on the
            // heap, so the future callers hold and move around stays small. Measured: kept
            // inline, the client spent 7% more CPU per call than with this one allocation.
            let r = Box::pin(self.call_inner(target, command, fingerprint, body, timeout)).await;
            if let Err(e) = &r
                && !e.is_remote()
            {
                tracing::debug!(error = ?e, "call failed");
            }
            r
        }
        .instrument(span)
        .await
    }

    async fn call_inner(
        self: &Arc<Self>,
        target: &Target,
        command: u16,
        fingerprint: u32,
        body: Body,
        timeout: Duration,
    ) -> Result<Bytes, CallError<Bytes>> {
        let deadline = Instant::now() + timeout;
        // A new span of the caller's trace (or a new trace): the callee's handler runs in it.
        let trace = super::otel::outgoing(scope::outgoing_trace());
        let addr = until(deadline, self.resolve(target, command))
            .await
            .map_err(|()| CallError::Timeout {
                target: target.clone(),
                command,
                after: timeout,
            })??;
        self.check_incarnation(target, addr, command)?;
        if self.is_local(addr) {
            let reply = self
                .call_local(command, fingerprint, timeout, trace, body.into_payload())
                .await;
            return from_reply(target, command, timeout, reply);
        }
        let max = self.settings.max_message_size;
        if body.len() + wire::REQUEST_HEADER > max {
            return Err(CallError::TooLarge {
                command,
                size: body.len() as u64,
                max: max as u64,
                ran: false,
            });
        }
        let id = self.next_id();
        self.insert_pending(
            id,
            Pending {
                peer: addr,
                incarnation: self
                    .transport
                    .peer_incarnation(addr)
                    .or(target.incarnation()),
                command,
                target: target.clone(),
                wait: Wait::Waiting(None),
                deadline,
                timeout,
            },
        );

        let ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        let bytes = body.into_request(&wire::RequestHeader {
            cmd: command,
            id,
            deadline_ms: ms,
            fingerprint,
            trace,
        });
        let channel = channel_for(bytes.len());
        let mut guard = CallGuard {
            rpc: self,
            id,
            peer: addr,
            channel,
            armed: true,
        };
        let timed_out = || CallError::Timeout {
            target: target.clone(),
            command,
            after: timeout,
        };
        let queued = until(deadline, self.transport.queue(addr, channel, bytes)).await;
        let mut delivery = match queued {
            Err(()) => return Err(timed_out()),
            Ok(Err(e)) => return Err(transport_error(target, command, e)),
            Ok(Ok(d)) => d,
        };
        let mut acked = false;
        let mut rx = std::pin::pin!(std::future::poll_fn(|cx| self.poll_outcome(id, cx)));
        let outcome = loop {
            tokio::select! {
                biased;
                o = &mut rx => break o,
                d = &mut delivery, if !acked => {
                    acked = true;
                    if let Err(e) = d {
                        return Err(transport_error(target, command, e));
                    }
                    self.set_pending_incarnation(id, self.transport.peer_incarnation(addr));
                }
            }
        };
        guard.armed = false;
        match outcome {
            Some(Outcome::Response(status, payload)) => from_reply(
                target,
                command,
                timeout,
                Reply {
                    status,
                    payload: payload.into(),
                },
            ),
            Some(Outcome::Failed(e)) => Err(e),
            None => Err(CallError::ShuttingDown { side: Side::Local }),
        }
    }

    /// A reliable one-way message, resolved on acknowledgement.
    pub(crate) async fn send_oneway(
        self: &Arc<Self>,
        target: &Target,
        command: u16,
        fingerprint: u32,
        body: Body,
    ) -> Result<(), CallError<Bytes>> {
        let addr = self.resolve(target, command).await?;
        self.check_incarnation(target, addr, command)?;
        if self.is_local(addr) {
            self.on_oneway(addr, command, fingerprint, body.into_payload());
            return Ok(());
        }
        let bytes = body.into_oneway(command, fingerprint);
        let d = self
            .transport
            .queue(addr, channel_for(bytes.len()), bytes)
            .await
            .map_err(|e| transport_error(target, command, e))?;
        d.await.map_err(|e| transport_error(target, command, e))
    }

    /// An unreliable one-way datagram.
    pub(crate) async fn usend_oneway(
        self: &Arc<Self>,
        target: &Target,
        command: u16,
        fingerprint: u32,
        body: Body,
    ) -> Result<(), CallError<Bytes>> {
        let addr = self.resolve(target, command).await?;
        self.check_incarnation(target, addr, command)?;
        if self.is_local(addr) {
            self.on_oneway(addr, command, fingerprint, body.into_payload());
            return Ok(());
        }
        self.transport
            .send_unreliable(addr, body.into_oneway(command, fingerprint))
            .map_err(|e| transport_error(target, command, e))
    }
}

/// `fut`'s result, or `Err(())` once `deadline` has passed. A future that is ready at once
/// (an address needs no lookup, a queue with room takes the message) never builds a timer.
async fn until<F: std::future::Future>(deadline: Instant, fut: F) -> Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    if let std::task::Poll::Ready(v) = futures::poll!(fut.as_mut()) {
        return Ok(v);
    }
    tokio::time::timeout_at(deadline, fut).await.map_err(|_| ())
}

/// `fut`'s result, or `Timeout` (naming `target`) once `timeout` has passed.
pub(crate) async fn within<T, E>(
    timeout: Duration,
    target: &Target,
    command: u16,
    fut: impl std::future::Future<Output = Result<T, CallError<E>>>,
) -> Result<T, CallError<E>> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Timeout {
                target: target.clone(),
                command,
                after: timeout,
            })
        })
}

pub(crate) fn encode<T: Serialize + ?Sized, E>(command: u16, v: &T) -> Result<Bytes, CallError<E>> {
    codec::encode(v).map_err(|e| codec(command, CodecStage::EncodeRequest, e))
}

/// `v` encoded as the body of one message (its envelope header is written in place later).
pub(crate) fn encode_body<T: Serialize + ?Sized, E>(
    command: u16,
    v: &T,
) -> Result<Body, CallError<E>> {
    Body::encode(v).map_err(|e| codec(command, CodecStage::EncodeRequest, e))
}

/// A raw error of a method that cannot fail remotely, typed (a remote error here means the
/// two sides have different signatures).
pub(crate) fn untyped_error(target: &Target, command: u16, e: CallError<Bytes>) -> CallError {
    e.split().unwrap_or_else(|_| CallError::Incompatible {
        target: target.clone(),
        command,
        reason: Incompatibility::UnexpectedRemoteError,
    })
}

/// Decodes a typed result from a raw call result, for methods that cannot fail remotely.
pub(crate) fn typed<Resp: DeserializeOwned + 'static>(
    target: &Target,
    command: u16,
    r: Result<Bytes, CallError<Bytes>>,
) -> Result<Resp, CallError> {
    match r {
        Ok(b) => codec::decode_shared(b).map_err(|e| codec(command, CodecStage::DecodeResponse, e)),
        Err(e) => Err(untyped_error(target, command, e)),
    }
}

/// Decodes a typed result from a raw call result, for methods returning `Result<T, E>`.
pub(crate) fn typed_fallible<Resp: DeserializeOwned + 'static, E: DeserializeOwned>(
    command: u16,
    r: Result<Bytes, CallError<Bytes>>,
) -> Result<Resp, CallError<E>> {
    match r {
        Ok(b) => codec::decode_shared(b).map_err(|e| codec(command, CodecStage::DecodeResponse, e)),
        Err(e) => Err(match e.split() {
            Ok(other) => other,
            Err(b) => match codec::decode::<E>(&b) {
                Ok(e) => CallError::Remote(e),
                Err(e) => codec(command, CodecStage::DecodeResponse, e),
            },
        }),
    }
}

/// Where a [`Client`] sends its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// One node.
    Node(Target),
    /// Round-robin over the available nodes of a type that serve the method.
    Balanced(String),
    /// A random available node of a type that serves the method.
    Random(String),
}

/// The untyped client: calls on command ids to one destination, the way the clients
/// `#[mesh_service]` generates do (they wrap one). Cheap to clone.
///
/// Built like every client: a destination ([`for_node`](Self::for_node),
/// [`for_type`](Self::for_type), [`random_of_type`](Self::random_of_type)), then options
/// ([`on`](Self::on) a mesh, [`with_timeout`](Self::with_timeout)). Without `on`, calls go
/// through the process's default mesh: the only one running, or the one started with
/// [`MeshBuilder::default_for_process`](crate::MeshBuilder::default_for_process).
///
/// ```no_run
/// # async fn demo(mesh: mesh_core::Mesh, addr: std::net::SocketAddr) -> Result<(), mesh_core::CallError> {
/// use mesh_core::rpc::Client;
/// let sum: i64 = Client::for_node(addr).on(&mesh).call(1000, &(2i64, 3i64)).await?;
/// Client::for_type("log").send(1001, "started").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    route: Route,
    dest: Destination,
    timeout: Option<Duration>,
}

impl Client {
    fn with_dest(dest: Destination) -> Client {
        Client {
            route: Route::Default,
            dest,
            timeout: None,
        }
    }

    /// Calls one node: a [`NodeId`](crate::NodeId) (that incarnation only), a
    /// [`SocketAddr`], a `"host:port"` or a [`NodeRecord`](crate::NodeRecord).
    pub fn for_node(target: impl Into<Target>) -> Client {
        Client::with_dest(Destination::Node(target.into()))
    }

    /// A client through a given messaging layer (for the crate's own layers above rpc).
    pub(crate) fn through(rpc: Arc<Rpc>, target: Target) -> Client {
        Client {
            route: Route::Given(rpc),
            dest: Destination::Node(target),
            timeout: None,
        }
    }

    /// Calls the available (online, reachable) nodes of `node_type` that serve each
    /// command, round-robin.
    pub fn for_type(node_type: impl Into<String>) -> Client {
        Client::with_dest(Destination::Balanced(node_type.into()))
    }

    /// Calls a random available node of `node_type` that serves each command.
    pub fn random_of_type(node_type: impl Into<String>) -> Client {
        Client::with_dest(Destination::Random(node_type.into()))
    }

    /// Goes through `mesh` instead of the process default. The client does not keep the
    /// mesh running: once it stops, calls fail with [`NoMesh::Stopped`](super::NoMesh::Stopped).
    pub fn on(mut self, mesh: &impl Via) -> Client {
        self.route = Route::given(mesh);
        self
    }

    /// Sets the deadline of every call (default: the mesh's `request_timeout`, 3 s). Inside
    /// a handler, a call never outlives the caller's own deadline: it gets the shorter of
    /// the two.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// Where calls go.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// The messaging layer calls go through, and the deadline of a call starting now.
    fn prepare(&self) -> Result<(Arc<Rpc>, Duration), CallError> {
        let rpc = self.route.get()?;
        let own = self.timeout.unwrap_or(rpc.settings.default_timeout);
        Ok((rpc, scope::bounded_timeout(own)))
    }

    /// The raw result and the target it went to; `Err` when no call could start (no mesh,
    /// no node of the type).
    async fn raw(
        &self,
        command: Command,
        body: Body,
    ) -> Result<(Target, Result<Bytes, CallError<Bytes>>), CallError> {
        let (rpc, timeout) = self.prepare()?;
        let target = self.target(&rpc, command.id)?;
        let r = rpc
            .call(&target, command.id, command.fingerprint, body, timeout)
            .await;
        Ok((target, r))
    }

    /// Calls a command whose handler cannot fail (built with [`handler`](super::handler),
    /// or a generated method without `Result`).
    pub async fn call<Req, Resp>(
        &self,
        command: impl Into<Command>,
        req: &Req,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        let command = command.into();
        let body = encode_body(command.id, req)?;
        let (target, r) = self.raw(command, body).await?;
        typed(&target, command.id, r)
    }

    /// Calls a command whose handler returns `Result<Resp, E>`: `E` comes back as
    /// [`CallError::Remote`].
    pub async fn call_fallible<Req, Resp, E>(
        &self,
        command: impl Into<Command>,
        req: &Req,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
        E: DeserializeOwned,
    {
        let command = command.into();
        let body = encode_body(command.id, req)?;
        match self.raw(command, body).await {
            Ok((_, r)) => typed_fallible(command.id, r),
            Err(e) => Err(e.widen()),
        }
    }

    /// The node this call goes to (picked now for balanced and random destinations).
    fn target(&self, rpc: &Rpc, command: u16) -> Result<Target, CallError> {
        Ok(match &self.dest {
            Destination::Node(t) => t.clone(),
            Destination::Balanced(ty) => Target::Node(rpc.select_balanced(ty, command)?),
            Destination::Random(ty) => Target::Node(rpc.select_random(ty, command)?),
        })
    }

    /// Sends a reliable one-way message: resolves when the target acknowledged it, or fails
    /// with `Timeout` at the client's deadline (default: the mesh's `request_timeout`), e.g.
    /// when the target is alive but its application stopped taking messages and the
    /// flow-control window is full. A message that timed out may still be delivered.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        command: impl Into<Command>,
        msg: &M,
    ) -> Result<(), CallError> {
        let command = command.into();
        let (rpc, timeout) = self.prepare()?;
        let body = encode_body(command.id, msg)?;
        let target = self.target(&rpc, command.id)?;
        let sent = within(
            timeout,
            &target,
            command.id,
            rpc.send_oneway(&target, command.id, command.fingerprint, body),
        )
        .await;
        sent.map_err(|e| untyped_error(&target, command.id, e))
    }

    /// Sends an unreliable one-way datagram (at most one datagram's payload; it may be
    /// lost, and nothing tells).
    pub async fn usend<M: Serialize + ?Sized>(
        &self,
        command: impl Into<Command>,
        msg: &M,
    ) -> Result<(), CallError> {
        let command = command.into();
        let (rpc, _) = self.prepare()?;
        let body = encode_body(command.id, msg)?;
        let target = self.target(&rpc, command.id)?;
        rpc.usend_oneway(&target, command.id, command.fingerprint, body)
            .await
            .map_err(|e| untyped_error(&target, command.id, e))
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn a_call_future_stays_small() {
        // The call's state is boxed (see `Rpc::call`): what callers hold stays small enough
        // to move around and to hold many of.
        let c = super::Client::for_node(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        let b = bytes::Bytes::new();
        let f = c.call::<bytes::Bytes, bytes::Bytes>(1000u16, &b);
        assert!(
            std::mem::size_of_val(&f) <= 2048,
            "{} bytes",
            std::mem::size_of_val(&f)
        );
    }
}
