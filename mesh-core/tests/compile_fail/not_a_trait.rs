use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
struct Greeter;

fn main() {}
