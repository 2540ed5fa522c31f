use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Sync1 {
    fn a(&self) -> u32;
}

fn main() {}
