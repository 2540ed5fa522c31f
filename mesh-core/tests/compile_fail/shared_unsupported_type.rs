use mesh_core::SharedObject;

#[derive(SharedObject, Clone)]
struct Room {
    name: &'static str,
    on_join: fn(u32),
}

fn main() {}
