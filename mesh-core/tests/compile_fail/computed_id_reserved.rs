use mesh_core::mesh_service;

// 64998, 64999, then 65000: the third method lands in the reserved range.
#[mesh_service(id = 64998)]
trait Near {
    async fn a(&self);
    async fn b(&self);
    async fn c(&self);
}

fn main() {}
