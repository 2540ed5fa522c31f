use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Pinned {
    #[mesh(id = 65100)]
    async fn reserved(&self);
    #[mesh(id = 70000)]
    async fn too_large(&self);
}

fn main() {}
