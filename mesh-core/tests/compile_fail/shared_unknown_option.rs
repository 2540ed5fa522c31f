use std::collections::BTreeMap;
use mesh_core::SharedObject;

#[derive(SharedObject, Clone, Default)]
struct Room {
    #[shared(maximum = 3)]
    players: i64,
    #[shared(max_len = 10)]
    name: String,
    #[shared(max_len = 5)]
    members: BTreeMap<String, u32>,
}

fn main() {}
