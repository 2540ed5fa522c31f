use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Gen {
    async fn a<T>(&self, t: T);
    async fn b(&self, t: u32) where u32: Copy;
}

fn main() {}
