use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait Borrowed {
    async fn a(&self, name: &str);
    async fn b(&self, v: Vec<&'static [u8]>);
    async fn c(&self, v: std::borrow::Cow<'_, str>);
}

fn main() {}
