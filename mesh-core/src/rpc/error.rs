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
    /// The name does not resolve.
    Resolve(String),
    /// A local limit stopped the message (session table or memory budget full).
    LocalLimit(String),
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Transport(r) => r.fmt(f),
            Unreachable::Left => f.write_str("the node left the mesh"),
            Unreachable::Resolve(e) => write!(f, "cannot resolve the address: {e}"),
            Unreachable::LocalLimit(e) => write!(f, "a local transport limit was hit: {e}"),
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
    #[error("call to {target} (command {command}) timed out after {after:?}")]
    Timeout {
        /// The target.
        target: String,
        /// The command id.
        command: u16,
        /// The deadline.
        after: Duration,
    },
    /// The peer is unreachable (crashed, partitioned, or left); it may have run the request.
    #[error("call to {target} (command {command}) failed: peer unreachable: {reason}")]
    Unreachable {
        /// The target.
        target: String,
        /// The command id.
        command: u16,
        /// Why.
        reason: Unreachable,
    },
    /// The target restarted; the old process may have run the request.
    #[error(
        "call to {target} (command {command}) failed: the node restarted (incarnation {old:#x} -> {new:#x})"
    )]
    Restarted {
        /// The target.
        target: String,
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
        target: String,
        /// The command id.
        command: u16,
    },
    /// The target is past its concurrency limit; not run. Retry later or elsewhere.
    #[error("{target} is overloaded (command {command} not run); retry later or on another node")]
    Overloaded {
        /// The target.
        target: String,
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
        target: String,
        /// The command id.
        command: u16,
        /// The panic message.
        message: String,
    },
    /// Encoding or decoding failed.
    #[error("command {command}: {stage:?} failed: {error}")]
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
    #[error("command {command}: message of {size} bytes exceeds the limit of {max} bytes")]
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
    /// The two sides disagree on the method's signature (or cluster/wire version); not run.
    #[error("call to {target} is incompatible: {detail}")]
    Incompatible {
        /// The target.
        target: String,
        /// The command id.
        command: u16,
        /// Which method or which part of the protocol differs.
        detail: String,
    },
    /// No mesh is started in this process (or the one given has stopped).
    #[error("no mesh is started: start one with Mesh::builder().start() or pass one explicitly")]
    NotStarted,
    /// The local or remote node is shutting down; not run.
    #[error("the {side} node is shutting down")]
    ShuttingDown {
        /// "local" or "remote".
        side: &'static str,
    },
    /// No node is available for the call (balanced or random selection found none).
    #[error("no available node of type {node_type:?} serves command {command}")]
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
            | CallError::Overloaded { .. }
            | CallError::Incompatible { .. }
            | CallError::NotStarted
            | CallError::ShuttingDown { .. }
            | CallError::NoNode { .. } => false,
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
                detail,
            } => CallError::Incompatible {
                target,
                command,
                detail,
            },
            CallError::NotStarted => CallError::NotStarted,
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
        target: target.to_string(),
        command,
        detail: format!("the transport refused: {reason}"),
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
