//! Errors of calls and of handler registration.

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use crate::codec::CodecError;
use crate::node::Target;
use crate::rudp::{RejectReason, UnreachableReason};

/// Why a peer could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreachable {
    /// The transport gave up on it.
    Transport(UnreachableReason),
    /// Discovery says it left.
    Left,
    /// The `host:port` does not resolve.
    Resolve {
        /// The name looked up.
        host: String,
        /// What the resolver said.
        error: String,
    },
    /// A local limit stopped the message (which one is named: the session table, the
    /// receive memory budget, the send queue).
    LocalLimit(&'static str),
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Transport(r) => r.fmt(f),
            Unreachable::Left => f.write_str("the node left the mesh"),
            Unreachable::Resolve { host, error } => {
                write!(f, "cannot resolve {host:?}: {error}")
            }
            Unreachable::LocalLimit(e) => write!(
                f,
                "a local transport limit was hit ({e}); retry later or raise the limit"
            ),
        }
    }
}

/// Where a codec error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecStage {
    /// Encoding the request here: nothing was sent.
    EncodeRequest,
    /// The remote could not decode the request as its handler's type: not run.
    DecodeRequest,
    /// The remote could not encode its response: it ran.
    EncodeResponse,
    /// The response could not be decoded here: it ran.
    DecodeResponse,
}

impl CodecStage {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            CodecStage::EncodeRequest => 0,
            CodecStage::DecodeRequest => 1,
            CodecStage::EncodeResponse => 2,
            CodecStage::DecodeResponse => 3,
        }
    }

    pub(crate) fn from_u8(b: u8) -> Option<CodecStage> {
        Some(match b {
            0 => CodecStage::EncodeRequest,
            1 => CodecStage::DecodeRequest,
            2 => CodecStage::EncodeResponse,
            3 => CodecStage::DecodeResponse,
            _ => return None,
        })
    }
}

impl fmt::Display for CodecStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecStage::EncodeRequest => "encoding the request (nothing was sent)",
            CodecStage::DecodeRequest => {
                "decoding the request on the remote (not run: do both sides use the same types?)"
            }
            CodecStage::EncodeResponse => "encoding the response on the remote (it ran)",
            CodecStage::DecodeResponse => {
                "decoding the response (it ran: do both sides use the same types?)"
            }
        })
    }
}

/// Which node a [`CallError::ShuttingDown`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Side {
    /// This node is stopping.
    Local,
    /// The called node is stopping.
    Remote,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Remote => "remote",
        })
    }
}

/// What two nodes disagree on ([`CallError::Incompatible`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incompatibility {
    /// The method's signature differs: the caller was built with another version of it.
    Signature {
        /// The service on the called node (empty for a bare command handler).
        service: String,
        /// The method on the called node.
        method: String,
        /// The fingerprint the caller sent.
        sent: u32,
        /// The fingerprint of the called node's handler.
        served: u32,
    },
    /// The transport refused the session (another protocol version or cluster).
    Transport(RejectReason),
    /// The remote returned an error for a method that cannot fail: the two sides have
    /// different signatures (a fallible handler answered an infallible call).
    UnexpectedRemoteError,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incompatibility::Signature {
                service,
                method,
                sent,
                served,
            } => {
                let sep = if service.is_empty() { "" } else { "::" };
                write!(
                    f,
                    "method {service}{sep}{method} has another signature there (fingerprint \
                     {served:#010x}, the caller's {sent:#010x}): deploy matching versions or \
                     give the changed method a new id"
                )
            }
            Incompatibility::Transport(r) => write!(f, "the transport refused: {r}"),
            Incompatibility::UnexpectedRemoteError => f.write_str(
                "the remote returned an error for a method that cannot fail (signatures differ)",
            ),
        }
    }
}

/// Why a call found no mesh to go through ([`CallError::NoMesh`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoMesh {
    /// No mesh runs in this process.
    NoneStarted,
    /// Several meshes run and none was chosen as the default.
    Ambiguous {
        /// How many run.
        running: usize,
    },
    /// The mesh chosen with `default_for_process()` has stopped.
    DefaultStopped,
    /// The mesh given with `.on(&mesh)` has stopped.
    Stopped,
}

impl fmt::Display for NoMesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoMesh::NoneStarted => f.write_str(
                "no mesh is running in this process: start one with Mesh::builder().start()",
            ),
            NoMesh::Ambiguous { running } => write!(
                f,
                "{running} meshes run in this process and none is the default: pass one with \
                 .on(&mesh), or start one with Mesh::builder().default_for_process()"
            ),
            NoMesh::DefaultStopped => f.write_str(
                "the default mesh (chosen with default_for_process()) has stopped: start \
                 another with .default_for_process(), or pass one with .on(&mesh)",
            ),
            NoMesh::Stopped => f.write_str(
                "the mesh this client was given with .on(&mesh) has stopped: use a running one",
            ),
        }
    }
}

/// Why a call failed. Every call fails with exactly one of these; [`may_have_run`]
/// tells whether the remote handler may have run.
///
/// `E` is the method's own error type, returned in [`CallError::Remote`] (it is
/// [`Infallible`] for methods that cannot fail).
///
/// [`may_have_run`]: CallError::may_have_run
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E = Infallible> {
    /// The deadline passed with no answer; the handler may still be running.
    #[error(
        "call to {target} (command {command}) timed out after {after:?}; the handler may have run (raise the timeout with with_timeout if it is slow)"
    )]
    Timeout {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
        /// The deadline.
        after: Duration,
    },
    /// The peer is unreachable (crashed, partitioned, or left); it may have run the request.
    #[error("call to {target} (command {command}) failed: peer unreachable: {reason}")]
    Unreachable {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
        /// Why.
        reason: Unreachable,
    },
    /// The target restarted; the old process may have run the request.
    #[error(
        "call to {target} (command {command}) failed: the node restarted (incarnation {old:#x} -> {new:#x}); call the new incarnation by address if the call may be repeated"
    )]
    Restarted {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
        /// The incarnation called.
        old: u64,
        /// The one running now.
        new: u64,
    },
    /// The target has no handler for the command; not run.
    #[error("{target} has no handler for command {command} (is the service served there?)")]
    NoHandler {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
    },
    /// The target's access schema does not let this node's type call the command; not
    /// run. Add a rule on the target (`MeshBuilder::allow`, the `access` array) if it should.
    #[error(
        "{target} does not allow this node to call command {command} (its access schema has no rule for this node's type)"
    )]
    Forbidden {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
    },
    /// The target is past its concurrency limit; not run. Retry later or elsewhere.
    #[error("{target} is overloaded (command {command} not run); retry later or on another node")]
    Overloaded {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
    },
    /// The handler returned its own error.
    #[error("remote error: {0}")]
    Remote(E),
    /// The handler panicked (the remote node keeps running).
    #[error("the handler of command {command} on {target} panicked: {message}")]
    Panicked {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
        /// The panic message.
        message: String,
    },
    /// Encoding or decoding failed.
    #[error("command {command}: {stage} failed: {error}")]
    Codec {
        /// The command id.
        command: u16,
        /// Where.
        stage: CodecStage,
        /// What the codec said.
        error: String,
    },
    /// The request or response exceeds a size limit; refused without being sent (request)
    /// or after running (response).
    #[error(
        "command {command}: message of {size} bytes exceeds the limit of {max} bytes (max_message_size); send less or raise the limit on both sides"
    )]
    TooLarge {
        /// The command id.
        command: u16,
        /// The size.
        size: u64,
        /// The limit.
        max: u64,
        /// Whether the handler ran (the response was too large).
        ran: bool,
    },
    /// The two sides disagree on the method's signature (or the wire protocol); not run.
    #[error("call to {target} (command {command}) is incompatible: {reason}")]
    Incompatible {
        /// The target.
        target: Target,
        /// The command id.
        command: u16,
        /// What differs.
        reason: Incompatibility,
    },
    /// No mesh to go through: none runs, several run and none is the default, or the one
    /// chosen has stopped.
    #[error("{0}")]
    NoMesh(NoMesh),
    /// The local or remote node is shutting down; not run.
    #[error("the {side} node is shutting down (not run); retry on another node")]
    ShuttingDown {
        /// Which node.
        side: Side,
    },
    /// No node is available for the call (balanced or random selection found none).
    #[error(
        "no available node of type {node_type:?} serves command {command} (none online and reachable)"
    )]
    NoNode {
        /// The node type asked for.
        node_type: String,
        /// The command id.
        command: u16,
    },
}

impl<E> CallError<E> {
    /// Whether the remote handler may have run (so retrying is not idempotent-safe).
    pub fn may_have_run(&self) -> bool {
        match self {
            // A session that never opened, a name that does not resolve or a local limit
            // sent nothing.
            CallError::Unreachable {
                reason:
                    Unreachable::Transport(crate::rudp::UnreachableReason::HandshakeTimeout)
                    | Unreachable::Resolve { .. }
                    | Unreachable::LocalLimit(_),
                ..
            } => false,
            CallError::Timeout { .. }
            | CallError::Unreachable { .. }
            | CallError::Restarted { .. }
            | CallError::Remote(_)
            | CallError::Panicked { .. } => true,
            CallError::Codec { stage, .. } => matches!(
                stage,
                CodecStage::EncodeResponse | CodecStage::DecodeResponse
            ),
            CallError::TooLarge { ran, .. } => *ran,
            CallError::NoHandler { .. }
            | CallError::Forbidden { .. }
            | CallError::Overloaded { .. }
            | CallError::Incompatible { .. }
            | CallError::NoMesh(_)
            | CallError::ShuttingDown { .. }
            | CallError::NoNode { .. } => false,
        }
    }

    /// The variant's name (`"Timeout"`, `"Unreachable"`, `"Remote"`, ...), for tools and
    /// logs that report the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "Timeout",
            CallError::Unreachable { .. } => "Unreachable",
            CallError::Restarted { .. } => "Restarted",
            CallError::NoHandler { .. } => "NoHandler",
            CallError::Forbidden { .. } => "Forbidden",
            CallError::Overloaded { .. } => "Overloaded",
            CallError::Remote(_) => "Remote",
            CallError::Panicked { .. } => "Panicked",
            CallError::Codec { .. } => "Codec",
            CallError::TooLarge { .. } => "TooLarge",
            CallError::Incompatible { .. } => "Incompatible",
            CallError::NoMesh(_) => "NoMesh",
            CallError::ShuttingDown { .. } => "ShuttingDown",
            CallError::NoNode { .. } => "NoNode",
        }
    }

    /// The deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::Timeout { .. })
    }

    /// The peer is unreachable or restarted (a network-level failure).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            CallError::Unreachable { .. } | CallError::Restarted { .. }
        )
    }

    /// The handler's own error.
    pub fn is_remote(&self) -> bool {
        matches!(self, CallError::Remote(_))
    }

    /// The method's own error, if that is what this is.
    pub fn remote(&self) -> Option<&E> {
        match self {
            CallError::Remote(e) => Some(e),
            _ => None,
        }
    }

    /// Something the caller can retry later or elsewhere without changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Timeout { .. }
                | CallError::Unreachable { .. }
                | CallError::Restarted { .. }
                | CallError::Overloaded { .. }
                | CallError::ShuttingDown { .. }
                | CallError::NoNode { .. }
        )
    }

    /// Maps the remote error type.
    pub fn map_remote<F, E2>(self, f: F) -> CallError<E2>
    where
        F: FnOnce(E) -> E2,
    {
        match self.split() {
            Ok(e) => e,
            Err(remote) => CallError::Remote(f(remote)),
        }
    }

    /// Every error but [`Remote`](CallError::Remote), with another remote type; the remote
    /// error itself as `Err`.
    pub fn split<E2>(self) -> Result<CallError<E2>, E> {
        Ok(match self {
            CallError::Remote(e) => return Err(e),
            CallError::Timeout {
                target,
                command,
                after,
            } => CallError::Timeout {
                target,
                command,
                after,
            },
            CallError::Unreachable {
                target,
                command,
                reason,
            } => CallError::Unreachable {
                target,
                command,
                reason,
            },
            CallError::Restarted {
                target,
                command,
                old,
                new,
            } => CallError::Restarted {
                target,
                command,
                old,
                new,
            },
            CallError::NoHandler { target, command } => CallError::NoHandler { target, command },
            CallError::Forbidden { target, command } => CallError::Forbidden { target, command },
            CallError::Overloaded { target, command } => CallError::Overloaded { target, command },
            CallError::Panicked {
                target,
                command,
                message,
            } => CallError::Panicked {
                target,
                command,
                message,
            },
            CallError::Codec {
                command,
                stage,
                error,
            } => CallError::Codec {
                command,
                stage,
                error,
            },
            CallError::TooLarge {
                command,
                size,
                max,
                ran,
            } => CallError::TooLarge {
                command,
                size,
                max,
                ran,
            },
            CallError::Incompatible {
                target,
                command,
                reason,
            } => CallError::Incompatible {
                target,
                command,
                reason,
            },
            CallError::NoMesh(n) => CallError::NoMesh(n),
            CallError::ShuttingDown { side } => CallError::ShuttingDown { side },
            CallError::NoNode { node_type, command } => CallError::NoNode { node_type, command },
        })
    }
}

impl CallError<Infallible> {
    /// Widens an error of a call that cannot fail remotely into any remote error type.
    pub fn widen<E>(self) -> CallError<E> {
        self.map_remote(|never| match never {})
    }
}

pub(crate) fn codec<E>(command: u16, stage: CodecStage, e: CodecError) -> CallError<E> {
    CallError::Codec {
        command,
        stage,
        error: e.to_string(),
    }
}

pub(crate) fn incompatible<E>(target: &Target, command: u16, reason: RejectReason) -> CallError<E> {
    CallError::Incompatible {
        target: target.clone(),
        command,
        reason: Incompatibility::Transport(reason),
    }
}

/// Why a handler or service could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The id is in the range reserved for the framework (65000-65535).
    #[error("command {0} is reserved for the framework (65000-65535); use an id below 65000")]
    Reserved(u16),
    /// A handler for the id is already registered.
    #[error("command {command} already has a handler ({existing}); ids must be unique per node")]
    Duplicate {
        /// The id.
        command: u16,
        /// What holds it.
        existing: String,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
