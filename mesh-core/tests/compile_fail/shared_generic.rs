use mesh_core::SharedObject;

#[derive(SharedObject, Clone, Default)]
struct Room<T> {
    value: T,
}

fn main() {}
