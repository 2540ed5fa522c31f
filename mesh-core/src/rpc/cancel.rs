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
    /// The parent, its parent, and so on (flat: nothing here recurses).
    ancestors: Vec<Arc<Node>>,
}

impl Node {
    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
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
        let mut ancestors = Vec::with_capacity(self.0.ancestors.len() + 1);
        ancestors.push(self.0.clone());
        ancestors.extend(self.0.ancestors.iter().cloned());
        Self(Arc::new(Node {
            ancestors,
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
        self.0.is_set() || self.0.ancestors.iter().any(|a| a.is_set())
    }

    /// Resolves once this signal or an ancestor's has fired.
    pub(crate) async fn cancelled(&self) {
        if self.0.ancestors.is_empty() {
            return self.0.fired().await;
        }
        let all = std::iter::once(&self.0)
            .chain(self.0.ancestors.iter())
            .map(|n| Box::pin(n.fired()));
        futures::future::select_all(all).await;
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

    #[tokio::test]
    async fn fires_once_for_every_waiter_and_clone() {
        let c = Cancel::new();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!c.is_cancelled());
        c.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .expect("the waiter ran");
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
        let waiter = tokio::spawn({
            let child = child.clone();
            async move { child.cancelled().await }
        });
        tokio::task::yield_now().await;
        parent.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the child woke with its parent")
            .expect("the waiter ran");
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
