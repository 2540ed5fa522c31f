use mesh_core::mesh_service;

#[mesh_service(id = 1000, retries = 3)]
trait Unknown {
    #[mesh(timeout = 5)]
    async fn a(&self);
    #[mesh(oneway, oneway)]
    async fn b(&self);
}

fn main() {}
