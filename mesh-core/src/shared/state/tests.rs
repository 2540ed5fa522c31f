use super::*;
use crate::shared::schema::FieldSpec;

fn schema() -> Schema {
    Schema {
        type_name: "Room".into(),
        fields: vec![
            FieldSpec {
                id: 0,
                name: "players".into(),
                kind: FieldKind::Counter {
                    min: 0,
                    max: 10,
                    clamp: false,
                },
            },
            FieldSpec {
                id: 1,
                name: "name".into(),
                kind: FieldKind::Value,
            },
            FieldSpec {
                id: 7,
                name: "members".into(),
                kind: FieldKind::Map { max_len: 2 },
            },
            FieldSpec {
                id: 3,
                name: "tilt".into(),
                kind: FieldKind::Counter {
                    min: -5,
                    max: 5,
                    clamp: true,
                },
            },
        ],
    }
}

const LIMITS: StateLimits = StateLimits {
    max_bytes: 64,
    max_map_len: 1000,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn fresh() -> ObjectState {
    let fields = vec![
        FieldState::Counter(0),
        FieldState::Value(b("a")),
        FieldState::Map(BTreeMap::new()),
        FieldState::Counter(0),
    ];
    ObjectState::new(&schema(), fields, LIMITS).unwrap()
}

#[test]
fn inc_becomes_the_new_value_and_bounds_refuse() {
    let s = schema();
    let mut st = fresh();
    let fx = st
        .apply(&s, &[Op::Inc { field: 0, by: 4 }], LIMITS)
        .unwrap();
    assert_eq!(fx, vec![Effect::Counter { field: 0, value: 4 }]);
    let err = st
        .apply(&s, &[Op::Inc { field: 0, by: 7 }], LIMITS)
        .unwrap_err();
    assert_eq!(
        err,
        Refusal::OutOfBounds {
            field: "players".into(),
            value: 11,
            min: 0,
            max: 10
        }
    );
    assert_eq!(st.fields[0], FieldState::Counter(4));
    // The clamping field stops at its bound instead.
    let fx = st
        .apply(&s, &[Op::Inc { field: 3, by: -99 }], LIMITS)
        .unwrap();
    assert_eq!(
        fx,
        vec![Effect::Counter {
            field: 3,
            value: -5
        }]
    );
}

#[test]
fn cas_compares_the_current_value() {
    let s = schema();
    let mut st = fresh();
    let cas = |expected: &str, new: &str| Op::Cas {
        field: 1,
        expected: b(expected),
        new: b(new),
    };
    assert_eq!(
        st.apply(&s, &[cas("x", "b")], LIMITS),
        Err(Refusal::CasFailed {
            field: "name".into()
        })
    );
    st.apply(&s, &[cas("a", "b")], LIMITS).unwrap();
    assert_eq!(st.fields[1], FieldState::Value(b("b")));
    let counter = Op::CasCounter {
        field: 0,
        expected: 1,
        new: 2,
    };
    assert!(matches!(
        st.apply(&s, &[counter], LIMITS),
        Err(Refusal::CasFailed { .. })
    ));
}

#[test]
fn a_batch_applies_all_or_none() {
    let s = schema();
    let mut st = fresh();
    let before = st.fields.clone();
    let ops = [
        Op::Put {
            field: 7,
            key: b("k"),
            value: b("v"),
        },
        Op::Inc { field: 0, by: 1 },
        Op::Inc { field: 0, by: 100 },
    ];
    assert!(matches!(
        st.apply(&s, &ops, LIMITS),
        Err(Refusal::OutOfBounds { value: 101, .. })
    ));
    assert_eq!(st.fields, before);
    // Later ops of a batch see the earlier ones.
    let ops = [Op::Inc { field: 0, by: 6 }, Op::Inc { field: 0, by: 4 }];
    let fx = st.apply(&s, &ops, LIMITS).unwrap();
    assert_eq!(fx.len(), 2);
    assert_eq!(st.fields[0], FieldState::Counter(10));
}

#[test]
fn maps_hold_their_limit_and_effects_carry_field_ids() {
    let s = schema();
    let mut st = fresh();
    let put = |k: &str| Op::Put {
        field: 7,
        key: b(k),
        value: b("v"),
    };
    st.apply(&s, &[put("a")], LIMITS).unwrap();
    st.apply(&s, &[put("b")], LIMITS).unwrap();
    assert_eq!(
        st.apply(&s, &[put("c")], LIMITS),
        Err(Refusal::MapFull {
            field: "members".into(),
            max_len: 2
        })
    );
    // Replacing an entry is not growing.
    let fx = st.apply(&s, &[put("a")], LIMITS).unwrap();
    // Planned effects name the position (2); on the wire they name the id (7).
    assert_eq!(fx[0].field(), 2);
    assert_eq!(to_wire(&s, fx)[0].field(), 7);
    let del = Op::Delete {
        field: 7,
        key: b("a"),
    };
    st.apply(&s, &[del], LIMITS).unwrap();
    match &st.fields[2] {
        FieldState::Map(m) => assert_eq!(m.len(), 1),
        f => panic!("{f:?}"),
    }
}

#[test]
fn wrong_kinds_unknown_fields_and_size_are_refused() {
    let s = schema();
    let mut st = fresh();
    assert_eq!(
        st.apply(&s, &[Op::Inc { field: 1, by: 1 }], LIMITS),
        Err(Refusal::WrongKind {
            field: "name".into(),
            op: "inc".into()
        })
    );
    assert_eq!(
        st.apply(&s, &[Op::Inc { field: 2, by: 1 }], LIMITS),
        Err(Refusal::UnknownField { field: 2 })
    );
    let big = Op::Set {
        field: 1,
        value: Bytes::from(vec![0u8; 100]),
    };
    assert!(matches!(
        st.apply(&s, &[big], LIMITS),
        Err(Refusal::TooLarge { size: 132, max: 64 })
    ));
    assert_eq!(st.fields[1], FieldState::Value(b("a")));
    assert_eq!(st.bytes, 1 + 16 + 16);
}

#[test]
fn creation_is_checked_against_the_schema() {
    let s = schema();
    let short = vec![FieldState::Counter(0)];
    assert!(matches!(
        ObjectState::new(&s, short, LIMITS),
        Err(Refusal::Malformed { .. })
    ));
    let out = vec![
        FieldState::Counter(11),
        FieldState::Value(b("a")),
        FieldState::Map(BTreeMap::new()),
        FieldState::Counter(0),
    ];
    assert!(matches!(
        ObjectState::new(&s, out, LIMITS),
        Err(Refusal::OutOfBounds { value: 11, .. })
    ));
    let kinds = vec![
        FieldState::Value(b("0")),
        FieldState::Value(b("a")),
        FieldState::Map(BTreeMap::new()),
        FieldState::Counter(0),
    ];
    assert!(matches!(
        ObjectState::new(&s, kinds, LIMITS),
        Err(Refusal::WrongKind { .. })
    ));
}
