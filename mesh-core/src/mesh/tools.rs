//! What command-line tools call on a node: ping, reflection, JSON calls and stats (see
//! [`rpc::CMD_REFLECT`](crate::rpc::CMD_REFLECT)).

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::{Inner, Mesh, MeshStats};
use crate::node::Target;
use crate::rpc::{
    CMD_CALL_JSON, CMD_PING, CMD_REFLECT, CMD_STATS, CallContext, CallError, Client, CodecStage,
    Method, Reflection, ToolRefusal, fallible_handler,
};

/// The [`CMD_STATS`] handler: this node's [`Mesh::stats`] as JSON text. It holds the node
/// weakly (the registry it sits in belongs to the node).
pub(super) fn stats_method(node: Weak<Inner>) -> Method {
    let h = fallible_handler(move |_ctx: CallContext, (): ()| {
        let answer = match node.upgrade() {
            Some(inner) => {
                serde_json::to_string(&Mesh { inner }.stats()).map_err(|e| ToolRefusal::Encode {
                    message: e.to_string(),
                })
            }
            None => Err(ToolRefusal::Disabled),
        };
        async move { answer }
    });
    Method {
        id: CMD_STATS,
        name: "stats",
        fingerprint: 0,
        handler: h,
    }
}

impl Mesh {
    fn tool_client(&self, target: Target, timeout: Option<Duration>) -> Client {
        let c = Client::for_node(target).on(self);
        match timeout {
            Some(t) => c.with_timeout(t),
            None => c,
        }
    }

    /// Asks `target` to answer a ping; the round trip. A node that refuses it (its access
    /// schema has no rule for this node, or it predates the ping command) answered too: the
    /// refusal is the error, and [`CallError::Forbidden`] or [`CallError::NoHandler`] still
    /// tell that it is alive.
    pub async fn ping(&self, target: impl Into<Target>) -> Result<Duration, CallError> {
        self.ping_within(target, None).await
    }

    /// [`ping`](Self::ping) with its own deadline instead of `request_timeout`.
    pub async fn ping_within(
        &self,
        target: impl Into<Target>,
        timeout: Option<Duration>,
    ) -> Result<Duration, CallError> {
        let start = Instant::now();
        self.tool_client(target.into(), timeout)
            .call::<(), ()>(CMD_PING, &())
            .await?;
        Ok(start.elapsed())
    }

    /// What `target` serves: its services, methods, command ids, fingerprints and types
    /// (server reflection). Refused as [`ToolRefusal::Disabled`] by a node with
    /// `reflection = false`, and as [`CallError::Forbidden`] by one whose access schema has
    /// no rule letting this node call [`TOOLS_SERVICE`](crate::rpc::TOOLS_SERVICE).
    pub async fn reflect(
        &self,
        target: impl Into<Target>,
    ) -> Result<Reflection, CallError<ToolRefusal>> {
        let text: String = self
            .tool_client(target.into(), None)
            .call_fallible::<(), String, ToolRefusal>(CMD_REFLECT, &())
            .await?;
        serde_json::from_str(&text).map_err(|e| CallError::Codec {
            command: CMD_REFLECT,
            stage: crate::rpc::CodecStage::DecodeResponse,
            error: e.to_string(),
        })
    }

    /// Calls method `command` on `target` with JSON arguments (an array in order, an object
    /// by argument name, or empty for none); its result as JSON text. The method's own
    /// error comes back as [`ToolRefusal::MethodError`]; the target checks its access
    /// schema for `command` as for a direct call.
    pub async fn call_json(
        &self,
        target: impl Into<Target>,
        command: u16,
        args: &str,
    ) -> Result<String, CallError<ToolRefusal>> {
        self.call_json_within(target, command, args, None).await
    }

    /// [`call_json`](Self::call_json) with its own deadline instead of `request_timeout`.
    pub async fn call_json_within(
        &self,
        target: impl Into<Target>,
        command: u16,
        args: &str,
        timeout: Option<Duration>,
    ) -> Result<String, CallError<ToolRefusal>> {
        self.tool_client(target.into(), timeout)
            .call_fallible::<(u16, &str), String, ToolRefusal>(CMD_CALL_JSON, &(command, args))
            .await
    }

    /// Sends method `command` to `target` one-way with JSON arguments: resolves when the
    /// target acknowledged the message. Nothing tells whether it ran: a refusal (bad
    /// arguments, the access schema, reflection off) is dropped there.
    pub async fn send_json(
        &self,
        target: impl Into<Target>,
        command: u16,
        args: &str,
    ) -> Result<(), CallError> {
        self.tool_client(target.into(), None)
            .send(CMD_CALL_JSON, &(command, args))
            .await
    }

    /// What `target` counted since it started: its [`Mesh::stats`] (messaging, transport,
    /// shared objects, and per command and per peer figures where the node has them), read
    /// over [`CMD_STATS`]. Refused as [`CallError::Forbidden`] by a node whose access schema
    /// has no rule letting this node call [`TOOLS_SERVICE`](crate::rpc::TOOLS_SERVICE), and
    /// as [`CallError::NoHandler`] by a node that predates the command.
    pub async fn node_stats(
        &self,
        target: impl Into<Target>,
    ) -> Result<MeshStats, CallError<ToolRefusal>> {
        self.node_stats_within(target, None).await
    }

    /// [`node_stats`](Self::node_stats) with its own deadline instead of `request_timeout`.
    pub async fn node_stats_within(
        &self,
        target: impl Into<Target>,
        timeout: Option<Duration>,
    ) -> Result<MeshStats, CallError<ToolRefusal>> {
        let text: String = self
            .tool_client(target.into(), timeout)
            .call_fallible::<(), String, ToolRefusal>(CMD_STATS, &())
            .await?;
        serde_json::from_str(&text).map_err(|e| CallError::Codec {
            command: CMD_STATS,
            stage: CodecStage::DecodeResponse,
            error: e.to_string(),
        })
    }
}
