use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Names {
    async fn new(&self);
    async fn with_timeout(&self);
    async fn on(&self);
    async fn a(&self);
    async fn a_fingerprint(&self);
}

fn main() {}
