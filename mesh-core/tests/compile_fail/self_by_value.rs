use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Receivers {
    async fn by_value(self);
    async fn by_mut(&mut self);
    async fn boxed(self: Box<Self>);
}

fn main() {}
