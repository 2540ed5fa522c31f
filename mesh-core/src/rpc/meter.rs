//! What the serving side counts per command (requests run, failed) and the handler-time
//! histogram it records per request when metrics are on, through the `metrics` facade.
//!
//! The handle of the histogram is built once, when the command is registered, so a request
//! costs two atomic adds, and with metrics on two clock reads and one histogram record: no
//! label or key is built per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::handler::Handler;

/// The histogram of handler time, per command (seconds; labels `command`, `method`).
pub const HANDLER_SECONDS: &str = "mesh_handler_seconds";

/// A registered handler and what is counted of it (one reference count per request).
pub(crate) struct Served {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) meter: CommandMeter,
}

/// Requests of one command that ran, and those that failed.
pub(crate) struct CommandMeter {
    ran: AtomicU64,
    failed: AtomicU64,
    /// With metrics on: the handler-time histogram of this command.
    latency: Option<metrics::Histogram>,
}

impl CommandMeter {
    /// A meter for command `cmd` (`name` as `Service.method` or the bare method name);
    /// with `timed`, the handler time of every request goes to [`HANDLER_SECONDS`] in the
    /// recorder installed now.
    pub(crate) fn new(cmd: u16, name: &str, timed: bool) -> CommandMeter {
        let latency = timed.then(|| {
            metrics::histogram!(HANDLER_SECONDS, "command" => cmd.to_string(), "method" => name.to_string())
        });
        CommandMeter {
            ran: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency,
        }
    }

    /// When the handler starts: the instant to time it from, when it is timed.
    #[inline]
    pub(crate) fn start(&self) -> Option<Instant> {
        self.latency.as_ref().map(|_| Instant::now())
    }

    /// The handler ended (`ok`: it answered with its value, not an error, a panic, a
    /// cancellation or its deadline).
    #[inline]
    pub(crate) fn done(&self, started: Option<Instant>, ok: bool) {
        self.ran.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(h), Some(t)) = (&self.latency, started) {
            h.record(t.elapsed().as_secs_f64());
        }
    }

    /// Requests run and, of those, failed.
    pub(crate) fn read(&self) -> (u64, u64) {
        (
            self.ran.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// What one command served since this node registered it ([`MeshStats::commands`]).
///
/// [`MeshStats::commands`]: crate::MeshStats::commands
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CommandStats {
    /// The command id.
    pub command: u16,
    /// `Service.method` for a generated service, the method name for a bare handler.
    pub name: String,
    /// Requests and one-way messages whose handler ran.
    pub served: u64,
    /// Of those, the ones that did not end with the handler's value: its own error, a
    /// panic, or cancelled or past their deadline.
    pub served_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_and_failures_and_times_only_when_asked() {
        let m = CommandMeter::new(7, "Greeter.hello", false);
        assert!(m.start().is_none(), "untimed: no clock read");
        m.done(None, true);
        m.done(None, false);
        assert_eq!(m.read(), (2, 1));
        // Timed without a recorder: the facade's no-op histogram, still one clock read.
        let t = CommandMeter::new(7, "Greeter.hello", true);
        let s = t.start();
        assert!(s.is_some());
        t.done(s, true);
        assert_eq!(t.read(), (1, 0));
    }
}
