use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait NoSelf {
    async fn a(x: u32);
}

fn main() {}
