use mesh_core::mesh_service;

#[mesh_service(id = 1000)]
trait OneWay {
    #[mesh(oneway)]
    async fn a(&self) -> u32;
    #[mesh(unreliable)]
    async fn b(&self) -> Result<(), String>;
}

fn main() {}
