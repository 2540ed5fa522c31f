//! [`Delivery`]: the outcome of one reliable message, and the slot the driver fills in.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use super::{Inner, TransportError, lock};
use crate::rudp::{Failure, MessageId};

/// What a live [`Delivery`] is waiting for.
pub(super) enum Slot {
    /// In flight; the waker of the task polling the `Delivery`, if any.
    Pending(Option<Waker>),
    /// Acknowledged or failed.
    Done(Result<(), Failure>),
    /// The transport closed first.
    Closed,
}

impl Slot {
    pub(super) fn finish(&mut self, outcome: Slot) {
        if let Slot::Pending(w) = std::mem::replace(self, outcome)
            && let Some(w) = w
        {
            w.wake();
        }
    }
}

/// Resolves when the message is acknowledged by the peer, or with the reason it failed.
/// Dropping it does not cancel the message.
#[derive(Debug)]
pub struct Delivery {
    pub(super) peer: SocketAddr,
    pub(super) id: MessageId,
    pub(super) inner: Weak<Inner>,
    pub(super) finished: bool,
}

impl Future for Delivery {
    type Output = Result<(), TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.finished {
            return Poll::Ready(Err(TransportError::Closed));
        }
        let Some(inner) = self.inner.upgrade() else {
            self.finished = true;
            return Poll::Ready(Err(TransportError::Closed));
        };
        let mut st = lock(&inner.state);
        let id = self.id;
        let outcome = match st.deliveries.get_mut(&id) {
            Some(Slot::Pending(w)) if !inner.closed.load(Ordering::Acquire) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            Some(Slot::Done(Ok(()))) => Ok(()),
            Some(Slot::Done(Err(failure))) => Err(TransportError::Failed {
                peer: self.peer,
                failure: *failure,
            }),
            Some(Slot::Pending(_) | Slot::Closed) | None => Err(TransportError::Closed),
        };
        st.deliveries.remove(&id);
        drop(st);
        self.finished = true;
        Poll::Ready(outcome)
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        match inner.state.try_lock() {
            Ok(mut st) => {
                st.deliveries.remove(&self.id);
            }
            Err(_) => {
                // Busy, or held by this very thread (a waker dropped under the state lock
                // can drop the future owning this): leave the removal to the next flush.
                inner
                    .dropped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(self.id);
                inner.has_dropped.store(true, Ordering::Release);
            }
        }
    }
}
