use mesh_core::mesh_service;

#[mesh_service]
trait NoId {
    async fn a(&self);
}

fn main() {}
