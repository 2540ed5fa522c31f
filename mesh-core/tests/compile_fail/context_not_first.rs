use mesh_core::mesh_service;
use mesh_core::rpc::CallContext;

#[mesh_service(id = 1000)]
trait Ctx {
    async fn a(&self, x: u32, ctx: CallContext);
}

fn main() {}
