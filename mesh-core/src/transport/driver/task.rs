//! The driver task.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Inner, Rearm, lock};

/// A deadline that moved later by less than this keeps the timer armed for the earlier one:
/// at worst it fires early, once, and is armed again. (A retransmission deadline moves later
/// with every packet sent; replacing the timer entry each time costs more than that.)
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// The driver task: reads the socket when no [`Transport::recv`] caller does, runs the
/// timers, and retries sends the socket refused.
///
/// Written as one hand-rolled poll with long-lived wake-up registrations: the driver is
/// polled about once per datagram in a request/response exchange (if only to re-arm its
/// timer), so a poll that finds nothing to do has to be cheap.
pub(super) async fn drive(inner: Arc<Inner>) {
    let sleep = tokio::time::sleep(std::time::Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut sleep_at: Option<Instant> = None;
    // Whether `sleep` was polled (its waker registered) since it was last set.
    let mut sleep_polled = false;
    // Whether we already yielded once before moving the timer earlier (see below).
    let mut yielded = false;
    let writable = inner.socket.writable();
    tokio::pin!(writable);
    std::future::poll_fn(|cx| {
        // Register for wake-ups before reading the state they report on: a `flush`
        // elsewhere that moves a deadline earlier than `armed` then always wakes us.
        inner.wakers.driver.register(cx.waker());
        loop {
            // Read readiness wakes a waiting receiver first, then us (see `ReadWakers`).
            let mut read_cx = Context::from_waker(&inner.read_waker);
            if let Poll::Ready(r) = inner.socket.poll_recv_ready(&mut read_cx) {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "receive error");
                    return Poll::Pending;
                }
                let mut st = lock(&inner.state);
                let now = inner.clock.now();
                match inner.read_batch(&mut st, now) {
                    // A receiver took the datagrams first.
                    Ok(0) => continue,
                    Ok(_) => inner.flush(&mut st, now, Rearm::Driver),
                    Err(e) => tracing::debug!(error = %e, "receive error"),
                }
                // Let the application act on what arrived (its answer then carries the
                // acknowledgement) and other tasks run before reading again.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let (deadline, blocked) = {
                let mut st = lock(&inner.state);
                inner.driver_pending.store(false, Ordering::Relaxed);
                if st.flush_pending {
                    st.flush_pending = false;
                    inner.flush(&mut st, inner.clock.now(), Rearm::Driver);
                }
                let d = st.ep.poll_timeout();
                st.armed = d;
                (d, st.blocked)
            };
            if blocked && let Poll::Ready(r) = writable.as_mut().poll(cx) {
                writable.set(inner.socket.writable());
                if r.is_ok() {
                    let mut st = lock(&inner.state);
                    st.blocked = false;
                    inner.flush(&mut st, inner.clock.now(), Rearm::Driver);
                }
                continue;
            }
            if let Some(d) = deadline
                && inner.clock.is_manual()
            {
                // A manual clock: the deadline is reached when a test moves the time there.
                if inner.clock.poll_reached(d, cx).is_ready() {
                    let mut st = lock(&inner.state);
                    let now = inner.clock.now();
                    st.ep.handle_timeout(now);
                    inner.flush(&mut st, now, Rearm::Driver);
                    continue;
                }
                return Poll::Pending;
            }
            if let Some(d) = deadline {
                // Moving the timer earlier makes tokio wake its own I/O driver (an eventfd
                // write and one more epoll_wait). When the new deadline is not imminent (a
                // delayed acknowledgement, a retransmission timeout), let the other tasks
                // run first: the application's answer, about to be written, usually carries
                // the acknowledgement and the deadline is then gone.
                if !yielded
                    && sleep_at.is_none_or(|s| d < s)
                    && d.saturating_duration_since(inner.clock.now()) > Duration::from_micros(300)
                {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                yielded = false;
                let keep = sleep_at.is_some_and(|s| d > s && d - s < TIMER_SLACK);
                if sleep_at != Some(d) && !keep {
                    let at = tokio::time::Instant::from_std(d);
                    sleep_polled = false;
                    if sleep_at.is_some_and(|s| d > s) {
                        // `Sleep::reset` to a later instant leaves the timer wheel entry at
                        // the earlier one (it is re-inserted when that expires), and the
                        // runtime then waits with that earlier, shorter timeout. A kernel
                        // timer shorter than the scheduler tick is reprogrammed on every wait
                        // (two VM exits under virtualization): replace the entry instead.
                        sleep.set(tokio::time::sleep_until(at));
                    } else {
                        sleep.as_mut().reset(at);
                    }
                    sleep_at = Some(d);
                }
                // An armed timer that is not due has nothing to say (it wakes us when due).
                let due = !sleep_polled || sleep_at.is_none_or(|s| s <= inner.clock.now());
                sleep_polled = true;
                if due && sleep.as_mut().poll(cx).is_ready() {
                    // Fired (maybe early, see TIMER_SLACK): armed afresh on the next turn.
                    sleep_polled = false;
                    sleep_at = None;
                    let mut st = lock(&inner.state);
                    let now = inner.clock.now();
                    st.ep.handle_timeout(now);
                    inner.flush(&mut st, now, Rearm::Driver);
                    continue;
                }
            }
            return Poll::Pending;
        }
    })
    .await
}
