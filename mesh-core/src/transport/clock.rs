//! [`Clock`]: the one place the transport reads time.
//!
//! The driver takes every "now" for the protocol and every timer deadline from its clock. The
//! default, [`Clock::system`], is the monotonic clock (`std::time::Instant::now`, a branch
//! away) with tokio timers. [`Clock::manual`] stands still until a test moves it with
//! [`Clock::advance`]: the protocol's timers (handshake resends, retransmissions, delayed
//! acknowledgements, peer timeouts) then fire when the test says, not when real time passes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The time source of a [`Transport`](super::Transport). Cheap to clone; clones of a manual
/// clock share its time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    base: Instant,
    /// Nanoseconds since `base`.
    offset: AtomicU64,
    /// Drivers waiting for the time to move (one entry per transport using the clock).
    waiters: Mutex<Vec<Waker>>,
}

impl Clock {
    /// The monotonic system clock (the default).
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that starts at the current instant and moves only with
    /// [`advance`](Self::advance).
    pub fn manual() -> Clock {
        Clock {
            manual: Some(Arc::new(Manual {
                base: Instant::now(),
                offset: AtomicU64::new(0),
                waiters: Mutex::new(Vec::new()),
            })),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.base + Duration::from_nanos(m.offset.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock forward by `by` and wakes the transports using it, so their due
    /// timers run. Does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        let Some(m) = &self.manual else {
            return;
        };
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = m
            .offset
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_add(by))
            });
        let waiters = std::mem::take(&mut *m.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    /// For a manual clock: ready once the time has reached `at`; otherwise the task is woken
    /// by the next [`advance`](Self::advance). (The system clock's deadlines are tokio
    /// timers; this is always pending for it.)
    pub(super) fn poll_reached(&self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let Some(m) = &self.manual else {
            return Poll::Pending;
        };
        let mut waiters = m.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock `advance` takes after moving the time: no move is missed.
        if self.now() >= at {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_time_moves_only_when_advanced() {
        let c = Clock::manual();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        let c2 = c.clone();
        c2.advance(Duration::from_millis(250));
        assert_eq!(c.now(), t0 + Duration::from_millis(250));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(
            c.poll_reached(t0 + Duration::from_secs(1), &mut cx)
                .is_pending()
        );
        c.advance(Duration::from_secs(1));
        assert!(
            c.poll_reached(t0 + Duration::from_secs(1), &mut cx)
                .is_ready()
        );
        assert!(!Clock::system().is_manual());
    }
}
