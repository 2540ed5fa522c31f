use mesh_core::SharedObject;

#[derive(SharedObject, Clone, Default)]
struct Room {
    #[shared(min = 10, max = 1)]
    players: i64,
    #[shared(max = 300)]
    level: u8,
}

fn main() {}
