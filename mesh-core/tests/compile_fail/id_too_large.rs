use mesh_core::mesh_service;

#[mesh_service(id = 70000)]
trait Big {
    async fn a(&self);
}

fn main() {}
