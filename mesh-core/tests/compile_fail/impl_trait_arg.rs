use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Opaque {
    async fn a(&self, x: impl Into<String>);
    async fn b(&self) -> impl Clone;
}

fn main() {}
