//! What travels from a handler into the calls it makes: the caller's deadline and the trace.
//!
//! A request carries its remaining deadline and a W3C trace context (trace id, the calling
//! span's id, flags). The handler runs inside a scope holding both, so every call it makes
//! (through any client) gets the shorter of its own timeout and what is left of the
//! caller's, and continues the caller's trace with a new span id. When the caller gives up,
//! the handler's future is dropped, and with it the futures of its own calls, each of
//! which cancels its request on the node it went to: cancellation travels down the chain.

use std::fmt;
use std::time::{Duration, Instant};

/// A trace context in the shape of W3C `traceparent`: which trace a call belongs to, and
/// the span (call) that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TraceContext {
    /// The trace: the same on every hop of one top-level call.
    pub trace_id: u128,
    /// The span that made this call (the caller's call span).
    pub parent_id: u64,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// A new trace (sampled).
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: nonzero(rand::random::<u128>()),
            parent_id: 0,
            flags: 1,
        }
    }

    /// The context a call made from within this one carries: same trace, a new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            parent_id: nonzero(rand::random::<u64>()),
            flags: self.flags,
        }
    }

    /// The `traceparent` header form: `00-<trace id>-<parent id>-<flags>`.
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// Parses a `traceparent` header (version 00); `None` if it is not one.
    pub fn from_traceparent(s: &str) -> Option<TraceContext> {
        let mut it = s.trim().split('-');
        let (v, t, p, f) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || v != "00" || t.len() != 32 || p.len() != 16 || f.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(t, 16).ok().filter(|t| *t != 0)?;
        let parent_id = u64::from_str_radix(p, 16).ok().filter(|p| *p != 0)?;
        let flags = u8::from_str_radix(f, 16).ok()?;
        Some(TraceContext {
            trace_id,
            parent_id,
            flags,
        })
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

fn nonzero<T: PartialEq + From<u8>>(v: T) -> T {
    if v == T::from(0) { T::from(1) } else { v }
}

/// What a running handler passes on to the calls it makes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope {
    pub(crate) deadline: Option<Instant>,
    pub(crate) trace: TraceContext,
}

tokio::task_local! {
    static CURRENT: Scope;
}

/// Runs `fut` (a handler) inside `scope`.
pub(crate) async fn within<F: Future>(scope: Scope, fut: F) -> F::Output {
    CURRENT.scope(scope, fut).await
}

/// Runs `f` (a handler's synchronous part, or one poll of it) inside `scope`.
pub(crate) fn enter<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(scope, f)
}

fn current() -> Option<Scope> {
    CURRENT.try_with(|s| *s).ok()
}

/// The trace context of a call starting now: a child of the running handler's, or a new
/// trace.
pub(crate) fn outgoing_trace() -> TraceContext {
    match current() {
        Some(s) => s.trace.child(),
        None => TraceContext::new_root().child(),
    }
}

/// `own`, shortened to what is left of the running handler's deadline.
pub(crate) fn bounded_timeout(own: Duration) -> Duration {
    match current().and_then(|s| s.deadline) {
        Some(d) => own.min(d.saturating_duration_since(Instant::now())),
        None => own,
    }
}

/// The trace of the running handler, if this runs inside one.
pub fn current_trace() -> Option<TraceContext> {
    current().map(|s| s.trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_refusals() {
        let t = TraceContext::new_root().child();
        let s = t.traceparent();
        assert_eq!(s.len(), 55);
        assert_eq!(TraceContext::from_traceparent(&s), Some(t));
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xx",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
        }
        let w3c = TraceContext::from_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        assert_eq!(
            w3c.map(|t| (t.trace_id, t.parent_id, t.flags)),
            Some((0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, 1))
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_takes_a_new_span() {
        let root = TraceContext::new_root();
        let a = root.child();
        let b = a.child();
        assert_eq!((a.trace_id, b.trace_id), (root.trace_id, root.trace_id));
        assert_ne!(a.parent_id, b.parent_id);
    }

    #[tokio::test]
    async fn calls_inside_a_scope_inherit_its_deadline_and_trace() {
        assert_eq!(
            bounded_timeout(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert!(current_trace().is_none());
        let trace = TraceContext::new_root().child();
        let scope = Scope {
            deadline: Some(Instant::now() + Duration::from_millis(200)),
            trace,
        };
        within(scope, async {
            assert!(bounded_timeout(Duration::from_secs(3)) <= Duration::from_millis(200));
            assert_eq!(
                bounded_timeout(Duration::from_millis(5)),
                Duration::from_millis(5)
            );
            let out = outgoing_trace();
            assert_eq!(out.trace_id, trace.trace_id);
            assert_ne!(out.parent_id, trace.parent_id);
            assert_eq!(current_trace(), Some(trace));
        })
        .await;
    }
}
