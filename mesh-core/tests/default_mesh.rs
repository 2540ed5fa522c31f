//! The process-default mesh, with several meshes in one process: a single running mesh is
//! the default; several with none chosen is an error naming the fix; the chosen one is used
//! even when others run; a stopped default fails instead of falling back to another mesh;
//! `.on(&mesh)` always works.
//!
//! One test in its own binary: the default is per process, and tests in one binary share it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_core::rpc::{CallContext, CallError, Client, NoMesh, handler};
use mesh_core::{Discovery, LocalRegistry, Mesh, MeshError};

async fn start(registry: &LocalRegistry, name: &str, default: bool) -> Result<Mesh, MeshError> {
    let b = Mesh::builder()
        .node_type(name)
        .discovery(Discovery::local_registry(registry));
    if default { b.default_for_process() } else { b }
        .start()
        .await
}

/// Command 1: answers the node type of the node the request came from.
fn serve_whoami(mesh: &Mesh) -> mesh_core::Serving {
    mesh.handle(
        1,
        handler(
            |ctx: CallContext, (): ()| async move { ctx.sender_type().unwrap_or("?").to_string() },
        ),
    )
    .unwrap()
}

#[tokio::test]
async fn the_default_mesh_is_explicit_with_several() {
    let registry = LocalRegistry::new();
    let server = start(&registry, "server", false).await.unwrap();
    let _s = serve_whoami(&server);
    let to_server = Client::for_node(server.id());

    // One mesh running: it is the default.
    let who: String = to_server.call(1, &()).await.unwrap();
    assert_eq!(who, "server");

    // Two running, none chosen: ambiguous, and the error says what to do.
    let a = start(&registry, "a", false).await.unwrap();
    let e = to_server.call::<_, String>(1, &()).await.unwrap_err();
    assert_eq!(e, CallError::NoMesh(NoMesh::Ambiguous { running: 2 }));
    let text = e.to_string();
    assert!(
        text.contains(".on(&mesh)") && text.contains("default_for_process"),
        "{text}"
    );
    assert!(!e.may_have_run());

    // `.on(&mesh)` always works.
    let who: String = to_server.clone().on(&a).call(1, &()).await.unwrap();
    assert_eq!(who, "a");

    // A chosen default wins over the others, even started after them.
    let chosen = start(&registry, "chosen", true).await.unwrap();
    let who: String = to_server.call(1, &()).await.unwrap();
    assert_eq!(who, "chosen");
    let typed_through_default: String = Client::for_type("server").call(1, &()).await.unwrap();
    assert_eq!(typed_through_default, "chosen");

    // A second default while the first runs is refused at start.
    match start(&registry, "second", true).await {
        Err(MeshError::DefaultTaken) => {}
        other => panic!("expected DefaultTaken, got {other:?}"),
    }

    // The chosen default stopped: calls fail, naming the fix, instead of silently going
    // through another mesh.
    chosen.stop().await;
    let e = to_server.call::<_, String>(1, &()).await.unwrap_err();
    assert_eq!(e, CallError::NoMesh(NoMesh::DefaultStopped));
    assert!(e.to_string().contains("default_for_process"), "{e}");

    // A new default can be chosen once the old one stopped.
    let next = start(&registry, "next", true).await.unwrap();
    let who: String = to_server.call(1, &()).await.unwrap();
    assert_eq!(who, "next");

    // A client given a mesh that stopped says so.
    let via_a = to_server.clone().on(&a);
    a.stop().await;
    let e = via_a.call::<_, String>(1, &()).await.unwrap_err();
    assert_eq!(e, CallError::NoMesh(NoMesh::Stopped));

    next.stop().await;
    server.stop().await;
    // Nothing runs: none started.
    let e = to_server.call::<_, String>(1, &()).await.unwrap_err();
    assert_eq!(e, CallError::NoMesh(NoMesh::DefaultStopped));
}
