use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Shape<T> {
    type Item;
    const N: u32;
    async fn a(&self);
}

fn main() {}
