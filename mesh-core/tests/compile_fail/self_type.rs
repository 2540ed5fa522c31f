use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Me {
    async fn a(&self, other: Box<Self>);
    async fn b(&self) -> Box<Self>;
}

fn main() {}
