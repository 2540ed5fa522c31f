use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Dup {
    async fn a(&self); // 1000
    async fn b(&self); // 1001
    #[mesh(id = 1000)]
    async fn c(&self);
}

fn main() {}
