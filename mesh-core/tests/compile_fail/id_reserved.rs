use mesh_core::mesh_service;

#[mesh_service(id = 65000)]
trait Reserved {
    async fn a(&self);
}

fn main() {}
