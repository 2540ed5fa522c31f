use mesh_core::SharedObject;

#[derive(SharedObject, Clone, Default)]
struct Room {
    #[shared(min = 0, max = 10)]
    name: String,
    #[shared(on_bound = clamp)]
    tags: Vec<String>,
}

fn main() {}
