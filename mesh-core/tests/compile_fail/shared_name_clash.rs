use mesh_core::SharedObject;

#[derive(SharedObject, Clone, Default)]
struct Room {
    players: i64,
    inc_players: String,
    version: u64,
}

fn main() {}
