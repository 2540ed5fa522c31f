use mesh_core::SharedObject;

#[derive(SharedObject, Clone)]
enum Door {
    Open,
    Closed,
}

#[derive(SharedObject, Clone, Default)]
struct Pair(i64, i64);

fn main() {}
