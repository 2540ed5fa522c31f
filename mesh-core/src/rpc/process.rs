//! Which mesh a client goes through: the one given with `.on(&mesh)`, or the process
//! default.
//!
//! The rules: a mesh started with `default_for_process()` is the default while it runs (a
//! second one is refused at start); with none chosen, the only running mesh is the default;
//! with several running and none chosen, or with the chosen one stopped, a call through the
//! default fails with [`NoMesh`] naming the fix. A mesh never becomes the default by being
//! first.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::Rpc;
use super::error::{CallError, NoMesh};

/// Something calls go through: a started [`Mesh`](crate::Mesh). Sealed: only the crate's
/// own handles implement it.
pub trait Via: sealed::Sealed {
    #[doc(hidden)]
    fn messaging(&self) -> Messaging;
}

/// The messaging layer of one node, as a [`Via`] hands it to a client (opaque).
#[doc(hidden)]
#[derive(Clone)]
pub struct Messaging(pub(crate) Arc<Rpc>);

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Messaging({})", self.0.local)
    }
}

pub(crate) mod sealed {
    /// Keeps [`Via`](super::Via) implemented only inside this crate.
    #[allow(unreachable_pub)]
    pub trait Sealed {}
}

/// Where a client's calls go.
#[derive(Clone)]
pub(crate) enum Route {
    /// The process default, looked up at each call.
    Default,
    /// A given node.
    Given(Arc<Rpc>),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Default => f.write_str("default mesh"),
            Route::Given(r) => write!(f, "mesh at {}", r.local),
        }
    }
}

impl Route {
    pub(crate) fn given(via: &impl Via) -> Route {
        Route::Given(via.messaging().0)
    }

    /// The messaging layer to use now.
    pub(crate) fn get(&self) -> Result<Arc<Rpc>, CallError> {
        match self {
            Route::Default => default_rpc().map_err(CallError::NoMesh),
            Route::Given(r) if r.is_running() => Ok(r.clone()),
            Route::Given(_) => Err(CallError::NoMesh(NoMesh::Stopped)),
        }
    }
}

/// The meshes of this process.
struct Meshes {
    /// Every started mesh (dead entries pruned at each start).
    live: Vec<Weak<Rpc>>,
    /// The one chosen with `default_for_process()`, if any was.
    chosen: Option<Weak<Rpc>>,
}

static MESHES: Mutex<Meshes> = Mutex::new(Meshes {
    live: Vec::new(),
    chosen: None,
});

fn meshes() -> MutexGuard<'static, Meshes> {
    MESHES.lock().unwrap_or_else(|p| p.into_inner())
}

fn running(w: &Weak<Rpc>) -> Option<Arc<Rpc>> {
    w.upgrade().filter(|r| r.is_running())
}

/// A default already chosen and still running: another cannot be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DefaultTaken;

/// Records a started mesh; `default` makes it the process default.
pub(crate) fn register(rpc: &Arc<Rpc>, default: bool) -> Result<(), DefaultTaken> {
    let mut m = meshes();
    if default {
        if m.chosen.as_ref().and_then(running).is_some() {
            return Err(DefaultTaken);
        }
        m.chosen = Some(Arc::downgrade(rpc));
    }
    m.live.retain(|w| running(w).is_some());
    m.live.push(Arc::downgrade(rpc));
    Ok(())
}

/// The process default, or why there is none.
pub(crate) fn default_rpc() -> Result<Arc<Rpc>, NoMesh> {
    let m = meshes();
    if let Some(chosen) = &m.chosen {
        return running(chosen).ok_or(NoMesh::DefaultStopped);
    }
    let mut alive = m.live.iter().filter_map(running);
    match (alive.next(), alive.next()) {
        (None, _) => Err(NoMesh::NoneStarted),
        (Some(only), None) => Ok(only),
        (Some(_), Some(_)) => Err(NoMesh::Ambiguous {
            running: 2 + alive.count(),
        }),
    }
}
