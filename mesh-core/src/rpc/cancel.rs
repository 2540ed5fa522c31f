//! A cancellation signal for one handler: set once, observed by polling or awaiting.
//!
//! Every request gets one, so it is kept cheap: a clone or a drop is one atomic operation
//! (a `tokio_util` token takes a mutex for each), and a signal with no waiter costs no
//! wake-up. A child signal also fires when its parent does (the node's stop).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A cancellation signal; clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cancel(Arc<Node>);

#[derive(Debug, Default)]
struct Node {
    set: AtomicBool,
    notify: Notify,
    /// The signal this one also fires with (walked in a loop, never by recursion).
    parent: Option<Arc<Node>>,
}

impl Node {
    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// This node, its parent, its parent's parent, and so on.
    fn chain(self: &Arc<Self>) -> impl Iterator<Item = &Arc<Node>> {
        std::iter::successors(Some(self), |n| n.parent.as_ref())
    }

    /// Resolves once this very node has fired.
    async fn fired(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a `cancel` after the check wakes it.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

impl Cancel {
    /// A signal of its own.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A signal that also fires when this one does.
    pub(crate) fn child(&self) -> Self {
        Self(Arc::new(Node {
            parent: Some(self.0.clone()),
            ..Node::default()
        }))
    }

    /// Fires the signal (and so every child's).
    pub(crate) fn cancel(&self) {
        self.0.set.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// Whether this signal or an ancestor's has fired.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.chain().any(|n| n.is_set())
    }

    /// Resolves once this signal or an ancestor's has fired.
    pub(crate) async fn cancelled(&self) {
        if self.0.parent.is_none() {
            return self.0.fired().await;
        }
        futures::future::select_all(self.0.chain().map(|n| Box::pin(n.fired()))).await;
    }

    /// Fires the signal when the guard is dropped, unless disarmed first.
    pub(crate) fn drop_guard(self) -> CancelOnDrop {
        CancelOnDrop(Some(self))
    }
}

/// Fires its signal on drop (see [`Cancel::drop_guard`]).
#[derive(Debug)]
pub(crate) struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    /// Drops the guard without firing.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A task awaiting `c`, already parked on it.
    async fn waiting_on(c: &Cancel) -> tokio::task::JoinHandle<()> {
        let c = c.clone();
        let waiter = tokio::spawn(async move { c.cancelled().await });
        tokio::task::yield_now().await;
        waiter
    }

    /// Fails unless `waiter` finishes within a bound.
    async fn woke(waiter: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .expect("the waiter ran");
    }

    #[tokio::test]
    async fn fires_once_for_every_waiter_and_clone() {
        let c = Cancel::new();
        let waiter = waiting_on(&c).await;
        assert!(!c.is_cancelled());
        c.cancel();
        woke(waiter).await;
        assert!(c.is_cancelled());
        // Already fired: resolves at once.
        c.cancelled().await;
    }

    #[tokio::test]
    async fn a_child_fires_with_its_parent_not_the_other_way() {
        let parent = Cancel::new();
        let child = parent.child();
        let sibling = parent.child();
        sibling.cancel();
        assert!(!parent.is_cancelled());
        assert!(!child.is_cancelled());
        let waiter = waiting_on(&child).await;
        parent.cancel();
        woke(waiter).await;
        assert!(child.is_cancelled());
    }

    #[test]
    fn a_drop_guard_fires_unless_disarmed() {
        let c = Cancel::new();
        c.clone().drop_guard().disarm();
        assert!(!c.is_cancelled());
        drop(c.clone().drop_guard());
        assert!(c.is_cancelled());
    }
}
