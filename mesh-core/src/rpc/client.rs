//! The calling side: requests with deadlines, one exact error per failed call, cancellation
//! on drop, and the [`Client`] handle generated clients are built on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use super::error::{CallError, CodecStage, Unreachable, codec, incompatible};
use super::handler::Reply;
use super::wire::{self, Status};
use super::{Outcome, Pending, Rpc, channel_for};
use crate::codec::{Codec, Postcard};
use crate::mesh::{Mesh, MeshRef};
use crate::node::Target;
use crate::rudp::{Failure, SendError};
use crate::transport::TransportError;

/// Per-call options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The deadline (default: the mesh's `request_timeout`, 3 s).
    pub timeout: Option<Duration>,
    /// Fingerprint of the method's signature, checked by the receiver (0 = unchecked).
    pub fingerprint: u32,
}

impl CallOptions {
    /// Options with a deadline.
    pub fn timeout(d: Duration) -> CallOptions {
        CallOptions {
            timeout: Some(d),
            fingerprint: 0,
        }
    }

    /// Sets the fingerprint.
    pub fn with_fingerprint(mut self, fingerprint: u32) -> CallOptions {
        self.fingerprint = fingerprint;
        self
    }
}

/// Sends a cancel if the call is dropped before it completes.
struct CallGuard<'a> {
    rpc: &'a Arc<Rpc>,
    id: u64,
    peer: SocketAddr,
    armed: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.rpc.remove_pending(self.id) {
            // Best effort: if the queue is full the handler runs to its deadline.
            let _ = self.rpc.transport.try_queue_detached(
                self.peer,
                super::CH_SMALL,
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
    let t = target.to_string();
    match e {
        TransportError::Send(SendError::TooLarge { size, max }) => CallError::TooLarge {
            command,
            size: size as u64,
            max: max as u64,
            ran: false,
        },
        TransportError::Send(SendError::Overloaded { why, .. }) => CallError::Unreachable {
            target: t,
            command,
            reason: Unreachable::LocalLimit(why.to_string()),
        },
        TransportError::Failed { failure, .. } => match failure {
            Failure::Unreachable(r) => CallError::Unreachable {
                target: t,
                command,
                reason: Unreachable::Transport(r),
            },
            Failure::Restarted { old, new } => CallError::Restarted {
                target: t,
                command,
                old,
                new,
            },
            Failure::Incompatible(r) => incompatible(target, command, r),
            Failure::TooLarge { size, max } => CallError::TooLarge {
                command,
                size,
                max,
                ran: false,
            },
        },
        TransportError::Closed => CallError::ShuttingDown { side: "local" },
        other => CallError::Unreachable {
            target: t,
            command,
            reason: Unreachable::LocalLimit(other.to_string()),
        },
    }
}

fn from_reply(
    target: &Target,
    command: u16,
    timeout: Duration,
    r: Reply,
) -> Result<Bytes, CallError<Bytes>> {
    let t = || target.to_string();
    let text = |p: &Bytes| String::from_utf8_lossy(p).into_owned();
    match r.status {
        Status::Ok => Ok(r.payload),
        Status::Remote => Err(CallError::Remote(r.payload)),
        Status::NoHandler => Err(CallError::NoHandler {
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
        Status::Incompatible => Err(CallError::Incompatible {
            target: t(),
            command,
            detail: text(&r.payload),
        }),
        Status::Codec => {
            let msg = text(&r.payload);
            let stage = if msg.starts_with("encoding the response") {
                CodecStage::EncodeResponse
            } else {
                CodecStage::DecodeRequest
            };
            Err(CallError::Codec {
                command,
                stage,
                error: msg,
            })
        }
        Status::Expired => Err(CallError::Timeout {
            target: t(),
            command,
            after: timeout,
        }),
        Status::ShuttingDown => Err(CallError::ShuttingDown { side: "remote" }),
        Status::TooLarge => {
            let msg = text(&r.payload);
            let mut it = msg.split(':').map(|s| s.parse::<u64>().unwrap_or(0));
            Err(CallError::TooLarge {
                command,
                size: it.next().unwrap_or(0),
                max: it.next().unwrap_or(0),
                ran: true,
            })
        }
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
                target: target.to_string(),
                command,
                reason: Unreachable::Resolve("no address".into()),
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
        found.map_err(|e| CallError::Unreachable {
            target: target.to_string(),
            command,
            reason: Unreachable::Resolve(e),
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
                target: target.to_string(),
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
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError<Bytes>> {
        let span = super::debug_span(|| tracing::debug_span!("call", %target, command));
        async move {
            // The call's state (timers, queue wait, delivery) lives on the heap: the future
            // callers hold and move around stays small.
            let r = Box::pin(self.call_inner(target, command, fingerprint, payload, timeout)).await;
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
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError<Bytes>> {
        let deadline = Instant::now() + timeout;
        let addr = tokio::time::timeout_at(deadline, self.resolve(target, command))
            .await
            .map_err(|_| CallError::Timeout {
                target: target.to_string(),
                command,
                after: timeout,
            })??;
        self.check_incarnation(target, addr, command)?;
        if self.is_local(addr) {
            let reply = self
                .call_local(command, fingerprint, timeout, payload)
                .await;
            return from_reply(target, command, timeout, reply);
        }
        let max = self.settings.max_message_size;
        if payload.len() + wire::REQUEST_HEADER > max {
            return Err(CallError::TooLarge {
                command,
                size: payload.len() as u64,
                max: max as u64,
                ran: false,
            });
        }
        let id = self.next_id();
        let (tx, mut rx) = oneshot::channel();
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
                tx,
                deadline,
                timeout,
            },
        );
        let mut guard = CallGuard {
            rpc: self,
            id,
            peer: addr,
            armed: true,
        };
        let ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        let bytes = wire::request(command, id, ms, fingerprint, &payload);
        drop(payload);
        let timed_out = || CallError::Timeout {
            target: target.to_string(),
            command,
            after: timeout,
        };
        let queued = tokio::time::timeout_at(
            deadline,
            self.transport.queue(addr, channel_for(bytes.len()), bytes),
        )
        .await;
        let mut delivery = match queued {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(transport_error(target, command, e)),
            Ok(Ok(d)) => d,
        };
        let mut acked = false;
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
            Ok(Outcome::Response(status, payload)) => {
                from_reply(target, command, timeout, Reply { status, payload })
            }
            Ok(Outcome::Failed(e)) => Err(e),
            Err(_) => Err(CallError::ShuttingDown { side: "local" }),
        }
    }

    /// A reliable one-way message, resolved on acknowledgement.
    pub(crate) async fn send_oneway(
        self: &Arc<Self>,
        target: &Target,
        command: u16,
        fingerprint: u32,
        payload: Bytes,
    ) -> Result<(), CallError<Bytes>> {
        let addr = self.resolve(target, command).await?;
        self.check_incarnation(target, addr, command)?;
        if self.is_local(addr) {
            self.on_oneway(addr, command, fingerprint, payload);
            return Ok(());
        }
        let bytes = wire::oneway(command, fingerprint, &payload);
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
        payload: Bytes,
    ) -> Result<(), CallError<Bytes>> {
        let addr = self.resolve(target, command).await?;
        self.check_incarnation(target, addr, command)?;
        if self.is_local(addr) {
            self.on_oneway(addr, command, fingerprint, payload);
            return Ok(());
        }
        self.transport
            .send_unreliable(addr, wire::oneway(command, fingerprint, &payload))
            .map_err(|e| transport_error(target, command, e))
    }
}

/// `fut`'s result, or `Timeout` (naming the target `target()` describes) once `timeout` has
/// passed.
pub(crate) async fn within<T, E>(
    timeout: Duration,
    target: impl FnOnce() -> String,
    command: u16,
    fut: impl std::future::Future<Output = Result<T, CallError<E>>>,
) -> Result<T, CallError<E>> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Timeout {
                target: target(),
                command,
                after: timeout,
            })
        })
}

pub(crate) fn encode<T: Serialize + ?Sized, E>(command: u16, v: &T) -> Result<Bytes, CallError<E>> {
    Postcard
        .encode(v)
        .map_err(|e| codec(command, CodecStage::EncodeRequest, e))
}

/// Decodes a typed result from a raw call result, for methods that cannot fail remotely.
pub(crate) fn typed<Resp: DeserializeOwned>(
    command: u16,
    r: Result<Bytes, CallError<Bytes>>,
) -> Result<Resp, CallError> {
    match r {
        Ok(b) => Postcard
            .decode(&b)
            .map_err(|e| codec(command, CodecStage::DecodeResponse, e)),
        Err(e) => Err(e.split().unwrap_or_else(|_| CallError::Codec {
            command,
            stage: CodecStage::DecodeResponse,
            error:
                "the remote returned an error for a method that cannot fail (signatures differ?)"
                    .into(),
        })),
    }
}

/// Decodes a typed result from a raw call result, for methods returning `Result<T, E>`.
pub(crate) fn typed_fallible<Resp: DeserializeOwned, E: DeserializeOwned>(
    command: u16,
    r: Result<Bytes, CallError<Bytes>>,
) -> Result<Resp, CallError<E>> {
    match r {
        Ok(b) => Postcard
            .decode(&b)
            .map_err(|e| codec(command, CodecStage::DecodeResponse, e)),
        Err(e) => Err(match e.split() {
            Ok(other) => other,
            Err(b) => match Postcard.decode::<E>(&b) {
                Ok(e) => CallError::Remote(e),
                Err(e) => codec(command, CodecStage::DecodeResponse, e),
            },
        }),
    }
}

/// A raw one-way result as a typed one (one-way messages have no remote errors).
fn untyped(r: Result<(), CallError<Bytes>>, command: u16) -> Result<(), CallError> {
    r.map_err(|e| {
        e.split().unwrap_or_else(|_| CallError::Codec {
            command,
            stage: CodecStage::DecodeResponse,
            error: "unexpected remote error".into(),
        })
    })
}

/// Where a [`Client`] sends its calls.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Destination {
    /// One node.
    Node(Target),
    /// Round-robin over the available nodes of a type that serve the method.
    Balanced(String),
    /// A random available node of a type that serves the method.
    Random(String),
}

/// A handle for calling one destination, as generated clients wrap it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    mesh: MeshRef,
    dest: Destination,
    timeout: Option<Duration>,
}

impl Client {
    /// Calls `target` through the process's default mesh.
    pub fn for_node(target: impl Into<Target>) -> Client {
        Client {
            mesh: MeshRef::Default,
            dest: Destination::Node(target.into()),
            timeout: None,
        }
    }

    /// Calls `target` through `mesh`.
    pub fn new(mesh: &Mesh, target: impl Into<Target>) -> Client {
        Client {
            mesh: MeshRef::Given(mesh.clone()),
            dest: Destination::Node(target.into()),
            timeout: None,
        }
    }

    /// Calls the nodes of `node_type` round-robin (through the default mesh unless
    /// [`on`](Self::on) gives one).
    pub fn for_type(node_type: impl Into<String>) -> Client {
        Client {
            mesh: MeshRef::Default,
            dest: Destination::Balanced(node_type.into()),
            timeout: None,
        }
    }

    /// Calls a random node of `node_type`.
    pub fn random_of_type(node_type: impl Into<String>) -> Client {
        Client {
            mesh: MeshRef::Default,
            dest: Destination::Random(node_type.into()),
            timeout: None,
        }
    }

    /// Uses `mesh` instead of the default one.
    pub fn on(mut self, mesh: &Mesh) -> Client {
        self.mesh = MeshRef::Given(mesh.clone());
        self
    }

    /// Sets the deadline of every call made through this client.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// Where calls go.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// The mesh calls go through.
    pub fn mesh(&self) -> Result<Mesh, CallError> {
        self.mesh.get().ok_or(CallError::NotStarted)
    }

    async fn raw(
        &self,
        command: u16,
        fingerprint: u32,
        payload: Bytes,
    ) -> Result<Bytes, CallError<Bytes>> {
        let mesh = self.mesh.get().ok_or(CallError::NotStarted)?;
        let rpc = mesh.rpc();
        let timeout = self.timeout.unwrap_or(rpc.settings.default_timeout);
        let target = self.target(&mesh, command).map_err(CallError::widen)?;
        rpc.call(&target, command, fingerprint, payload, timeout)
            .await
    }

    /// Calls a method that cannot fail remotely.
    pub async fn call<Req, Resp>(
        &self,
        command: u16,
        fingerprint: u32,
        req: &Req,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = encode(command, req)?;
        typed(command, self.raw(command, fingerprint, payload).await)
    }

    /// Calls a method returning `Result<Resp, E>`.
    pub async fn call_fallible<Req, Resp, E>(
        &self,
        command: u16,
        fingerprint: u32,
        req: &Req,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let payload = encode(command, req)?;
        typed_fallible(command, self.raw(command, fingerprint, payload).await)
    }

    /// The node this call goes to (picked now for balanced and random destinations).
    fn target(&self, mesh: &Mesh, command: u16) -> Result<Target, CallError> {
        Ok(match &self.dest {
            Destination::Node(t) => t.clone(),
            Destination::Balanced(ty) => Target::Node(mesh.select_balanced(ty, command)?),
            Destination::Random(ty) => Target::Node(mesh.select_random(ty, command)?),
        })
    }

    /// Sends a reliable one-way message: resolves when the target acknowledged it, or fails
    /// with `Timeout` at the client's deadline (default: the mesh's `request_timeout`), e.g.
    /// when the target is alive but its application stopped taking messages and the
    /// flow-control window is full. A message that timed out may still be delivered.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        command: u16,
        fingerprint: u32,
        msg: &M,
    ) -> Result<(), CallError> {
        let mesh = self.mesh()?;
        let payload = encode(command, msg)?;
        let target = self.target(&mesh, command)?;
        let timeout = self.timeout.unwrap_or(mesh.rpc().settings.default_timeout);
        let sent = within(
            timeout,
            || target.to_string(),
            command,
            mesh.rpc()
                .send_oneway(&target, command, fingerprint, payload),
        )
        .await;
        untyped(sent, command)
    }

    /// Sends an unreliable one-way datagram.
    pub async fn usend<M: Serialize + ?Sized>(
        &self,
        command: u16,
        fingerprint: u32,
        msg: &M,
    ) -> Result<(), CallError> {
        let mesh = self.mesh()?;
        let payload = encode(command, msg)?;
        let target = self.target(&mesh, command)?;
        untyped(
            mesh.rpc()
                .usend_oneway(&target, command, fingerprint, payload)
                .await,
            command,
        )
    }
}
