//! The [`Broadcast`] handle generated broadcasts are built on: a request on many nodes with
//! every result collected, or a one-way message to many nodes through the relay tree.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::client::{encode, typed, typed_fallible, within};
use super::error::CallError;
use crate::mesh::{Mesh, MeshRef};
use crate::node::Target;

/// A handle for reaching many nodes at once (a broadcast): a request on every target with
/// every result collected ([`call`](Self::call), [`call_fallible`](Self::call_fallible)), or
/// a one-way message through the relay tree ([`send`](Self::send), [`usend`](Self::usend)).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broadcast {
    mesh: MeshRef,
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
            mesh: MeshRef::Default,
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
            mesh: MeshRef::Default,
            targets: BroadcastTargets::List(targets.into_iter().map(Into::into).collect()),
            timeout: None,
            limit: 0,
        }
    }

    /// Uses `mesh` instead of the default one.
    pub fn on(mut self, mesh: &Mesh) -> Broadcast {
        self.mesh = MeshRef::Given(mesh.clone());
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

    async fn raw(
        &self,
        command: u16,
        fingerprint: u32,
        payload: Bytes,
    ) -> Result<Vec<(Target, Result<Bytes, CallError<Bytes>>)>, CallError> {
        let mesh = self.mesh.get().ok_or(CallError::NotStarted)?;
        let targets = match &self.targets {
            BroadcastTargets::List(l) => l.clone(),
            BroadcastTargets::Type(ty) => mesh
                .nodes_serving(ty, command)
                .into_iter()
                .map(|r| Target::Node(r.id))
                .collect(),
        };
        let rpc = mesh.rpc();
        let timeout = self.timeout.unwrap_or(rpc.settings.default_timeout);
        let calls = targets.into_iter().map(|t| {
            let rpc = rpc.clone();
            let payload = payload.clone();
            async move {
                let r = rpc.call(&t, command, fingerprint, payload, timeout).await;
                (t, r)
            }
        });
        Ok(futures::future::join_all(calls).await)
    }

    /// Calls a method that cannot fail remotely on every target; one result per target.
    pub async fn call<Req, Resp>(
        &self,
        command: u16,
        fingerprint: u32,
        req: &Req,
    ) -> Result<Vec<(Target, Result<Resp, CallError>)>, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = encode(command, req)?;
        Ok(self
            .raw(command, fingerprint, payload)
            .await?
            .into_iter()
            .map(|(t, r)| (t, typed(command, r)))
            .collect())
    }

    /// Calls a method returning `Result<Resp, E>` on every target; one result per target.
    pub async fn call_fallible<Req, Resp, E>(
        &self,
        command: u16,
        fingerprint: u32,
        req: &Req,
    ) -> Result<Vec<(Target, Result<Resp, CallError<E>>)>, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let payload = encode(command, req)?;
        Ok(self
            .raw(command, fingerprint, payload)
            .await?
            .into_iter()
            .map(|(t, r)| (t, typed_fallible(command, r)))
            .collect())
    }

    /// The addresses of the targets, for a one-way message: the listed targets resolved, or
    /// the available nodes of the type that serve `command` (this one included if it does).
    async fn addrs(&self, mesh: &Mesh, command: u16) -> Result<Vec<SocketAddr>, CallError> {
        match &self.targets {
            BroadcastTargets::List(l) => mesh.resolve_all(l.iter().cloned(), command).await,
            BroadcastTargets::Type(ty) => Ok(mesh
                .nodes_serving(ty, command)
                .into_iter()
                .map(|r| r.addr())
                .collect()),
        }
    }

    async fn one_way<M: Serialize + ?Sized>(
        &self,
        command: u16,
        fingerprint: u32,
        msg: &M,
        reliable: bool,
    ) -> Result<(), CallError> {
        let mesh = self.mesh.get().ok_or(CallError::NotStarted)?;
        let payload: Bytes = encode(command, msg)?;
        let addrs = self.addrs(&mesh, command).await?;
        let timeout = self.timeout.unwrap_or(mesh.rpc().settings.default_timeout);
        let targets = addrs.len();
        within(
            timeout,
            || format!("{targets} nodes"),
            command,
            mesh.relay(addrs, command, fingerprint, payload, self.limit, reliable),
        )
        .await
    }

    /// Sends a reliable one-way message to every target through the relay tree (see
    /// [`with_limit`](Self::with_limit)); the payload is encoded once. `fingerprint` travels
    /// with it as with [`Client::send`](super::Client::send): a node whose handler has
    /// another fingerprint drops its copy (counted in
    /// [`RpcStats::incompatible`](super::RpcStats::incompatible)) and still forwards the
    /// others'. 0 is unchecked.
    ///
    /// Resolves when the first hops acknowledged; a first hop that is unreachable is
    /// skipped, its share sent directly, and its error returned; `Timeout` at the deadline
    /// ([`with_timeout`](Self::with_timeout), default the mesh's `request_timeout`) if the
    /// first hops have not all acknowledged by then (the message may still get through).
    /// No targets (no node of the type serves the method) is `Ok`.
    ///
    /// Order: broadcasts from one node to the same targets reach every node in the order
    /// they were sent (every hop forwards a message before it handles the next), except
    /// that a large one (over 16 KiB encoded) travels apart from small messages and may be
    /// overtaken by them, as a large message never holds up small ones.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        command: u16,
        fingerprint: u32,
        msg: &M,
    ) -> Result<(), CallError> {
        self.one_way(command, fingerprint, msg, true).await
    }

    /// [`send`](Self::send) with unreliable datagrams: each hop's copy may be lost (with
    /// the share it carries); every hop's datagram, its share of the addresses included,
    /// must fit one datagram.
    pub async fn usend<M: Serialize + ?Sized>(
        &self,
        command: u16,
        fingerprint: u32,
        msg: &M,
    ) -> Result<(), CallError> {
        self.one_way(command, fingerprint, msg, false).await
    }
}
