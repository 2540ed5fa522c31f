//! Typed messaging on command ids: request/response, one-way, unreliable, relay fan-out,
//! broadcast-collect, balanced and random calls.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::Mesh;
use crate::codec::{Codec, Postcard};
use crate::node::Target;
use crate::rpc::{Broadcast, CallError, CallOptions, Client, CodecStage, RpcStats};

fn encode<T: Serialize + ?Sized, E>(command: u16, v: &T) -> Result<Bytes, CallError<E>> {
    Postcard.encode(v).map_err(|e| CallError::Codec {
        command,
        stage: CodecStage::EncodeRequest,
        error: e.to_string(),
    })
}

impl Mesh {
    /// A client for one target through this mesh.
    pub fn client(&self, target: impl Into<Target>) -> Client {
        Client::new(self, target)
    }

    /// What this node's messaging layer dropped or refused since it started (malformed
    /// envelopes, late responses, one-way messages not run, incompatible signatures).
    pub fn rpc_stats(&self) -> RpcStats {
        self.rpc().counters.snapshot()
    }

    /// Sends a request and waits for the typed response, with the default deadline.
    ///
    /// ```no_run
    /// # async fn demo(mesh: mesh_core::Mesh, addr: std::net::SocketAddr) -> Result<(), mesh_core::rpc::CallError> {
    /// let sum: i64 = mesh.request(addr, 1000, &(2i64, 3i64)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request<Req, Resp>(
        &self,
        target: impl Into<Target>,
        command: u16,
        req: &Req,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        Client::new(self, target).call(command, 0, req).await
    }

    /// Sends a request with options (deadline, fingerprint).
    pub async fn request_with<Req, Resp>(
        &self,
        target: impl Into<Target>,
        command: u16,
        req: &Req,
        options: CallOptions,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let mut c = Client::new(self, target);
        if let Some(t) = options.timeout {
            c = c.with_timeout(t);
        }
        c.call(command, options.fingerprint, req).await
    }

    /// Sends a request to a handler returning `Result<Resp, E>`; `E` comes back in
    /// [`CallError::Remote`].
    pub async fn request_fallible<Req, Resp, E>(
        &self,
        target: impl Into<Target>,
        command: u16,
        req: &Req,
        options: CallOptions,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let mut c = Client::new(self, target);
        if let Some(t) = options.timeout {
            c = c.with_timeout(t);
        }
        c.call_fallible(command, options.fingerprint, req).await
    }

    /// Sends a reliable one-way message; resolves when the target acknowledged it.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        target: impl Into<Target>,
        command: u16,
        msg: &M,
    ) -> Result<(), CallError> {
        Client::new(self, target).send(command, 0, msg).await
    }

    /// Sends an unreliable one-way datagram (at most one datagram's payload; may be lost).
    pub async fn usend<M: Serialize + ?Sized>(
        &self,
        target: impl Into<Target>,
        command: u16,
        msg: &M,
    ) -> Result<(), CallError> {
        Client::new(self, target).usend(command, 0, msg).await
    }

    /// The addresses of `targets` (for a relay, which carries addresses).
    pub(crate) async fn resolve_all<I, T>(
        &self,
        targets: I,
        command: u16,
    ) -> Result<Vec<SocketAddr>, CallError>
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
    {
        let mut out = Vec::new();
        for t in targets {
            let t: Target = t.into();
            let a = self
                .rpc()
                .resolve(&t, command)
                .await
                .map_err(|e| e.split().unwrap_or(CallError::NotStarted))?;
            out.push(a);
        }
        Ok(out)
    }

    /// Sends a reliable message to many nodes through a relay tree: this node sends to at
    /// most `limit` nodes, each of which forwards to at most `limit` more (the payload is
    /// encoded once). Resolves when the first hops acknowledged; a first hop that is
    /// unreachable is skipped and its share sent directly. `limit` 0 uses `relay_limit`.
    ///
    /// The message carries no signature fingerprint (receivers do not check it):
    /// [`Broadcast::send`] sends one with a fingerprint, as generated broadcasts do.
    pub async fn send_many<I, T, M>(
        &self,
        targets: I,
        command: u16,
        msg: &M,
        limit: usize,
    ) -> Result<(), CallError>
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
        M: Serialize + ?Sized,
    {
        self.many(targets, command, msg, limit, true).await
    }

    /// [`send_many`](Self::send_many) with unreliable datagrams (every hop's share and the
    /// payload must fit one datagram).
    pub async fn usend_many<I, T, M>(
        &self,
        targets: I,
        command: u16,
        msg: &M,
        limit: usize,
    ) -> Result<(), CallError>
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
        M: Serialize + ?Sized,
    {
        self.many(targets, command, msg, limit, false).await
    }

    async fn many<I, T, M>(
        &self,
        targets: I,
        command: u16,
        msg: &M,
        limit: usize,
        reliable: bool,
    ) -> Result<(), CallError>
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
        M: Serialize + ?Sized,
    {
        let payload = encode(command, msg)?;
        let addrs = self.resolve_all(targets, command).await?;
        self.relay(addrs, command, 0, payload, limit, reliable)
            .await
    }

    /// Sends an encoded one-way message to `addrs` through the relay tree, with the
    /// fingerprint every receiver checks (0: unchecked). `limit` 0 uses `relay_limit`.
    pub(crate) async fn relay(
        &self,
        addrs: Vec<SocketAddr>,
        command: u16,
        fingerprint: u32,
        payload: Bytes,
        limit: usize,
        reliable: bool,
    ) -> Result<(), CallError> {
        let limit = if limit == 0 {
            self.rpc().settings.relay_limit
        } else {
            limit
        };
        let span =
            tracing::debug_span!("send_many", command, targets = addrs.len(), limit, reliable);
        self.rpc()
            .send_many(addrs, command, fingerprint, payload, limit, reliable)
            .instrument(span)
            .await
            .map_err(|e| {
                e.split().unwrap_or(CallError::Codec {
                    command,
                    stage: CodecStage::DecodeResponse,
                    error: "unexpected remote error".into(),
                })
            })
    }

    /// Sends the request to every target concurrently and collects every result (socketmesh
    /// broadcast with responses).
    pub async fn request_many<I, T, Req, Resp>(
        &self,
        targets: I,
        command: u16,
        req: &Req,
    ) -> Result<Vec<(Target, Result<Resp, CallError>)>, CallError>
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        Broadcast::to_nodes(targets)
            .on(self)
            .call(command, 0, req)
            .await
    }

    /// Sends the request to the next node of a round-robin over the online, reachable nodes
    /// of `node_type` that serve `command` (socketmesh `_balanced`).
    pub async fn request_balanced<Req, Resp>(
        &self,
        node_type: &str,
        command: u16,
        req: &Req,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        Client::for_type(node_type)
            .on(self)
            .call(command, 0, req)
            .await
    }

    /// Sends the request to a random online, reachable node of `node_type` that serves
    /// `command`.
    pub async fn request_random<Req, Resp>(
        &self,
        node_type: &str,
        command: u16,
        req: &Req,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        Client::random_of_type(node_type)
            .on(self)
            .call(command, 0, req)
            .await
    }
}
