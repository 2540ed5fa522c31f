//! The [`Broadcast`] handle generated broadcasts are built on: a request on many nodes with
//! every result collected, or a one-way message to many nodes through the relay tree.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::Rpc;
use super::client::{Command, encode, typed, typed_fallible, untyped_error, within};
use super::error::CallError;
use super::process::{Route, Via};
use super::scope;
use super::wire::Body;
use crate::node::Target;

/// A handle for reaching many nodes at once (a broadcast): a request on every target with
/// every result collected ([`call`](Self::call), [`call_fallible`](Self::call_fallible)), or
/// a one-way message through the relay tree ([`send`](Self::send), [`usend`](Self::usend)).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broadcast {
    route: Route,
    targets: BroadcastTargets,
    timeout: Option<Duration>,
    /// The relay limit of one-way messages (0: the mesh's `relay_limit`).
    limit: usize,
}

#[derive(Debug, Clone)]
enum BroadcastTargets {
    List(Vec<Target>),
    Type(String),
}

impl Broadcast {
    /// Every node of `node_type` that serves the method, through the default mesh.
    pub fn to_type(node_type: impl Into<String>) -> Broadcast {
        Broadcast {
            route: Route::Default,
            targets: BroadcastTargets::Type(node_type.into()),
            timeout: None,
            limit: 0,
        }
    }

    /// The given nodes, through the default mesh.
    pub fn to_nodes<I, T>(targets: I) -> Broadcast
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
    {
        Broadcast {
            route: Route::Default,
            targets: BroadcastTargets::List(targets.into_iter().map(Into::into).collect()),
            timeout: None,
            limit: 0,
        }
    }

    /// Goes through `mesh` instead of the process default (see [`Client::on`](super::Client::on)).
    pub fn on(mut self, mesh: &impl Via) -> Broadcast {
        self.route = Route::given(mesh);
        self
    }

    /// Sets the deadline of each call (requests only: one-way messages have no response to
    /// wait for).
    pub fn with_timeout(mut self, timeout: Duration) -> Broadcast {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the relay limit of one-way messages ([`send`](Self::send), [`usend`](Self::usend)):
    /// this node sends to at most `limit` targets, each of which forwards to at most `limit`
    /// more, and so on. The default (and `0`) is the mesh's `relay_limit` setting, 2 unless
    /// configured: a binary tree, so no node sends more than two copies and the depth grows
    /// with the logarithm of the number of targets. `1` makes a chain; a limit at least the
    /// number of targets sends to every target directly. Requests are not relayed: each target gets its own
    /// call whatever the limit.
    pub fn with_limit(mut self, limit: usize) -> Broadcast {
        self.limit = limit;
        self
    }

    /// The messaging layer and the deadline of a call starting now.
    fn prepare(&self) -> Result<(Arc<Rpc>, Duration), CallError> {
        let rpc = self.route.get()?;
        let own = self.timeout.unwrap_or(rpc.settings.default_timeout);
        Ok((rpc, scope::bounded_timeout(own)))
    }

    async fn raw(
        &self,
        command: Command,
        payload: Bytes,
    ) -> Result<Vec<(Target, Result<Bytes, CallError<Bytes>>)>, CallError> {
        let (rpc, timeout) = self.prepare()?;
        let targets = match &self.targets {
            BroadcastTargets::List(l) => l.clone(),
            BroadcastTargets::Type(ty) => rpc
                .nodes_serving(ty, command.id)
                .into_iter()
                .map(|r| Target::Node(r.id))
                .collect(),
        };
        let calls = targets.into_iter().map(|t| {
            let rpc = rpc.clone();
            let body = Body::copy(&payload);
            async move {
                let r = rpc
                    .call(&t, command.id, command.fingerprint, body, timeout)
                    .await;
                (t, r)
            }
        });
        Ok(futures::future::join_all(calls).await)
    }

    /// Calls a command whose handler cannot fail on every target; one result per target.
    pub async fn call<Req, Resp>(
        &self,
        command: impl Into<Command>,
        req: &Req,
    ) -> Result<Vec<(Target, Result<Resp, CallError>)>, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        let command = command.into();
        let payload = encode(command.id, req)?;
        Ok(self
            .raw(command, payload)
            .await?
            .into_iter()
            .map(|(t, r)| {
                let r = typed(&t, command.id, r);
                (t, r)
            })
            .collect())
    }

    /// Calls a command whose handler returns `Result<Resp, E>` on every target; one result
    /// per target.
    pub async fn call_fallible<Req, Resp, E>(
        &self,
        command: impl Into<Command>,
        req: &Req,
    ) -> Result<Vec<(Target, Result<Resp, CallError<E>>)>, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
        E: DeserializeOwned,
    {
        let command = command.into();
        let payload = encode(command.id, req)?;
        Ok(self
            .raw(command, payload)
            .await?
            .into_iter()
            .map(|(t, r)| (t, typed_fallible(command.id, r)))
            .collect())
    }

    /// The addresses of the targets, for a one-way message: the listed targets resolved
    /// (duplicates removed), or the available nodes of the type that serve `command` (this
    /// one included if it does).
    async fn addrs(&self, rpc: &Rpc, command: u16) -> Result<Vec<SocketAddr>, CallError> {
        match &self.targets {
            BroadcastTargets::List(l) => {
                let mut out: Vec<SocketAddr> = Vec::with_capacity(l.len());
                for t in l {
                    let a = rpc
                        .resolve(t, command)
                        .await
                        .map_err(|e| untyped_error(t, command, e))?;
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
                Ok(out)
            }
            BroadcastTargets::Type(ty) => Ok(rpc
                .nodes_serving(ty, command)
                .into_iter()
                .map(|r| r.addr())
                .collect()),
        }
    }

    async fn one_way<M: Serialize + ?Sized>(
        &self,
        command: Command,
        msg: &M,
        reliable: bool,
    ) -> Result<(), CallError> {
        let (rpc, timeout) = self.prepare()?;
        let payload: Bytes = encode(command.id, msg)?;
        let addrs = self.addrs(&rpc, command.id).await?;
        let Some(first) = addrs.first().copied() else {
            return Ok(());
        };
        let limit = if self.limit == 0 {
            rpc.settings.relay_limit
        } else {
            self.limit
        };
        let span = tracing::debug_span!(
            "broadcast",
            command = command.id,
            targets = addrs.len(),
            limit,
            reliable
        );
        let first = Target::Addr(first);
        let sent = within(
            timeout,
            &first,
            command.id,
            rpc.send_many(
                addrs,
                command.id,
                command.fingerprint,
                payload,
                limit,
                reliable,
            )
            .instrument(span),
        )
        .await;
        sent.map_err(|e| untyped_error(&first, command.id, e))
    }

    /// Sends a reliable one-way message to every target through the relay tree (see
    /// [`with_limit`](Self::with_limit)); the payload is encoded once. The command's
    /// fingerprint travels with it as with [`Client::send`](super::Client::send): a node
    /// whose handler has another fingerprint drops its copy (counted in
    /// [`RpcStats::incompatible`](super::RpcStats::incompatible)) and still forwards the
    /// others'.
    ///
    /// Resolves when the first hops acknowledged; a first hop that is unreachable is
    /// skipped, its share sent directly, and its error returned; `Timeout` (naming the
    /// first hop) at the deadline ([`with_timeout`](Self::with_timeout), default the mesh's
    /// `request_timeout`) if the first hops have not all acknowledged by then (the message
    /// may still get through). No targets (no node of the type serves the method) is `Ok`.
    ///
    /// Order: broadcasts from one node to the same targets reach every node in the order
    /// they were sent (every hop forwards a message before it handles the next), except
    /// that a large one (over 16 KiB encoded) travels apart from small messages and may be
    /// overtaken by them, as a large message never holds up small ones.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        command: impl Into<Command>,
        msg: &M,
    ) -> Result<(), CallError> {
        self.one_way(command.into(), msg, true).await
    }

    /// [`send`](Self::send) with unreliable datagrams: each hop's copy may be lost (with
    /// the share it carries); every hop's datagram, its share of the addresses included,
    /// must fit one datagram.
    pub async fn usend<M: Serialize + ?Sized>(
        &self,
        command: impl Into<Command>,
        msg: &M,
    ) -> Result<(), CallError> {
        self.one_way(command.into(), msg, false).await
    }
}
