use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Patterns {
    async fn a(&self, (x, y): (i32, i32));
    async fn b(&self, ref z: u32);
}

fn main() {}
