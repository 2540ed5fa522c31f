//! Handlers: what runs when a command arrives, with the call's context.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{Body, Payload, Status};

use crate::discovery::BoxFuture;
use crate::node::NodeId;

/// What a handler knows about the call it serves.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub(crate) from: SocketAddr,
    /// Looked up in the view on first use: (id, type) of a listed sender.
    pub(crate) sender: std::sync::OnceLock<Option<(NodeId, String)>>,
    pub(crate) membership: crate::discovery::Membership,
    pub(crate) command: u16,
    pub(crate) deadline: Option<Instant>,
    pub(crate) cancel: super::cancel::Cancel,
    pub(crate) oneway: bool,
    pub(crate) trace: Option<super::TraceContext>,
}

impl CallContext {
    /// The sender's mesh address.
    pub fn sender_addr(&self) -> SocketAddr {
        self.from
    }

    /// The sender's node id, if it is a listed node (guests are not).
    pub fn sender_id(&self) -> Option<NodeId> {
        self.sender_info().map(|(id, _)| *id)
    }

    fn sender_info(&self) -> Option<&(NodeId, String)> {
        self.sender
            .get_or_init(|| {
                self.membership
                    .view()
                    .by_addr(self.from)
                    .map(|r| (r.id, r.node_type.clone()))
            })
            .as_ref()
    }

    /// The sender's node type, if it is a listed node.
    pub fn sender_type(&self) -> Option<&str> {
        self.sender_info().map(|(_, t)| t.as_str())
    }

    /// The command id.
    pub fn command(&self) -> u16 {
        self.command
    }

    /// The caller's deadline (none for one-way messages).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the caller gives up (zero when past; `None` for one-way messages).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Resolves when the caller gave up (dropped its call or its deadline passed), or the
    /// node is shutting down. The handler's future is dropped at that point anyway; this is
    /// for work it started elsewhere.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Whether this is a one-way message (no response is sent).
    pub fn is_oneway(&self) -> bool {
        self.oneway
    }

    /// The caller's trace context (`traceparent`-shaped: the trace id shared by every hop of
    /// one top-level call, and the id of the calling span); `None` for one-way messages.
    /// Calls this handler makes continue the same trace.
    pub fn trace(&self) -> Option<super::TraceContext> {
        self.trace
    }
}

/// What a handler produced: an encoded value, an encoded remote error, or a framework
/// failure.
#[derive(Debug, Clone)]
pub struct Reply {
    pub(crate) status: Status,
    pub(crate) payload: Payload,
}

impl Reply {
    /// A successful, encoded value.
    pub fn ok(payload: Bytes) -> Reply {
        Reply {
            status: Status::Ok,
            payload: payload.into(),
        }
    }

    /// The handler's own error, encoded.
    pub fn remote_error(payload: Bytes) -> Reply {
        Reply {
            status: Status::Remote,
            payload: payload.into(),
        }
    }

    pub(crate) fn failure(status: Status, message: impl Into<String>) -> Reply {
        Reply {
            status,
            payload: Bytes::from(message.into()).into(),
        }
    }
}

/// A type-erased handler. Build one with [`handler`], [`fallible_handler`] or [`raw_handler`]
/// (or let `#[mesh_service]` do it).
pub trait Handler: Send + Sync + 'static {
    /// Runs the command on an encoded request.
    fn call(&self, ctx: CallContext, payload: Bytes) -> BoxFuture<'static, Reply>;
}

struct Typed<F, Req, Resp, E, const FALLIBLE: bool> {
    f: F,
    _t: PhantomData<fn(Req) -> (Resp, E)>,
}

fn decode_request<Req: DeserializeOwned + 'static>(payload: Bytes) -> Result<Req, Reply> {
    crate::codec::decode_shared(payload).map_err(|e| Reply {
        status: Status::Codec,
        payload: super::wire::codec_detail(super::CodecStage::DecodeRequest, &e.to_string()).into(),
    })
}

fn encode_value<T: Serialize>(v: &T, status: Status) -> Reply {
    match Body::encode(v) {
        Ok(body) => Reply {
            status,
            payload: Payload::Body(body),
        },
        Err(e) => Reply {
            status: Status::Codec,
            payload: super::wire::codec_detail(super::CodecStage::EncodeResponse, &e.to_string())
                .into(),
        },
    }
}

impl<F, Fut, Req, Resp> Handler for Typed<F, Req, Resp, (), false>
where
    F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    fn call(&self, ctx: CallContext, payload: Bytes) -> BoxFuture<'static, Reply> {
        match decode_request::<Req>(payload) {
            Ok(req) => {
                let fut = (self.f)(ctx, req);
                Box::pin(async move { encode_value(&fut.await, Status::Ok) })
            }
            Err(r) => Box::pin(async move { r }),
        }
    }
}

impl<F, Fut, Req, Resp, E> Handler for Typed<F, Req, Resp, E, true>
where
    F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    E: Serialize + Send + 'static,
{
    fn call(&self, ctx: CallContext, payload: Bytes) -> BoxFuture<'static, Reply> {
        match decode_request::<Req>(payload) {
            Ok(req) => {
                let fut = (self.f)(ctx, req);
                Box::pin(async move {
                    match fut.await {
                        Ok(v) => encode_value(&v, Status::Ok),
                        Err(e) => encode_value(&e, Status::Remote),
                    }
                })
            }
            Err(r) => Box::pin(async move { r }),
        }
    }
}

/// A handler from an async function of a typed request that cannot fail.
///
/// ```
/// use mesh_core::rpc::{handler, CallContext};
/// let h = handler(|_ctx: CallContext, name: String| async move { format!("hi {name}") });
/// # let _ = h;
/// ```
pub fn handler<F, Fut, Req, Resp>(f: F) -> Arc<dyn Handler>
where
    F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    Arc::new(Typed::<F, Req, Resp, (), false> { f, _t: PhantomData })
}

/// A handler from an async function returning `Result<T, E>`: `E` reaches the caller as
/// [`CallError::Remote`](super::CallError::Remote).
pub fn fallible_handler<F, Fut, Req, Resp, E>(f: F) -> Arc<dyn Handler>
where
    F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    E: Serialize + Send + 'static,
{
    Arc::new(Typed::<F, Req, Resp, E, true> { f, _t: PhantomData })
}

struct Raw<F>(F);

impl<F, Fut> Handler for Raw<F>
where
    F: Fn(CallContext, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Bytes>> + Send + 'static,
{
    fn call(&self, ctx: CallContext, payload: Bytes) -> BoxFuture<'static, Reply> {
        let fut = (self.0)(ctx, payload);
        Box::pin(async move {
            match fut.await {
                Ok(b) => Reply::ok(b),
                Err(b) => Reply::remote_error(b),
            }
        })
    }
}

/// A handler on raw bytes (`Ok` is the response, `Err` a remote error payload).
pub fn raw_handler<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(CallContext, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Bytes>> + Send + 'static,
{
    Arc::new(Raw(f))
}

/// One method of a [`Service`]: its command id, name, signature fingerprint and handler.
#[derive(Clone)]
pub struct Method {
    /// The command id.
    pub id: u16,
    /// The method's name (for errors and the node record).
    pub name: &'static str,
    /// Fingerprint of the method's signature (0 = unchecked).
    pub fingerprint: u32,
    /// What runs.
    pub handler: Arc<dyn Handler>,
}

impl Method {
    /// A method whose signature is not fingerprinted (the framework's own commands).
    pub(crate) fn unchecked(id: u16, name: &'static str, handler: Arc<dyn Handler>) -> Method {
        Method {
            id,
            name,
            fingerprint: 0,
            handler,
        }
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Method")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("fingerprint", &format_args!("{:#010x}", self.fingerprint))
            .finish_non_exhaustive()
    }
}

/// A set of methods served together, as `#[mesh_service]` generates
/// (`GreeterServer::new(impl)`); pass it to [`Mesh::serve`](crate::Mesh::serve).
pub trait Service: Send + Sync + 'static {
    /// The service's name.
    fn name(&self) -> &'static str;
    /// Its methods.
    fn methods(&self) -> Vec<Method>;
    /// What its methods say about themselves, for reflection and JSON calls (see
    /// [`rpc::CMD_REFLECT`](super::CMD_REFLECT)); `#[mesh_service]` generates it. A method
    /// without a schema is listed without types and cannot be called with JSON.
    fn schema(&self) -> Vec<super::MethodSchema> {
        Vec::new()
    }
}
