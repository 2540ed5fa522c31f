//! Unit tests of the expansion (the compile errors are trybuild cases in mesh-core).

use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

use crate::expand;

fn run(attr: TokenStream2, item: TokenStream2) -> String {
    expand(attr, item).to_string()
}

#[test]
fn expands_the_example() {
    let out = run(
        quote!(id = 1000),
        quote! {
            pub trait Greeter {
                async fn hello(&self, name: String) -> String;
                async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
                async fn who(&self, ctx: CallContext) -> String;
                #[mesh(id = 1010)] async fn pinned(&self) -> u32;
                #[mesh(oneway)] async fn notify(&self, msg: String);
                #[mesh(unreliable)] async fn tick(&self, n: u64);
            }
        },
    );
    assert!(!out.contains("compile_error"), "{out}");
    for needle in [
        "pub const HELLO : u16 = 1000u16",
        "pub const DIVIDE : u16 = 1001u16",
        "pub const WHO : u16 = 1002u16",
        "pub const PINNED : u16 = 1010u16",
        "pub const NOTIFY : u16 = 1004u16",
        "pub const TICK : u16 = 1005u16",
        "\"Greeter::divide(i64,i64)->Result<i64,MathError>\"",
        "\"Greeter::who()->String\"",
        "pub struct GreeterClient",
        "pub struct GreeterBroadcast",
        "pub struct GreeterServer",
        "fallible_handler",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in {out}");
    }
}

#[test]
fn signature_text_ignores_whitespace_and_names() {
    let a = run(
        quote!(id = 1),
        quote!(
            trait T {
                async fn m(&self, x: Vec<u8>) -> Option<u32>;
            }
        ),
    );
    let b = run(
        quote!(id = 1),
        quote!(
            trait T {
                async fn m(&self, renamed: Vec<u8>) -> Option<u32>;
            }
        ),
    );
    let fp = |s: &str| {
        s.split("fingerprint (\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string)
    };
    assert_eq!(fp(&a), Some("T::m(Vec<u8>)->Option<u32>".to_string()));
    assert_eq!(fp(&a), fp(&b));
}

#[test]
fn name_overrides_the_service_name() {
    let out = run(
        quote!(id = 1, name = "Other"),
        quote!(
            trait T {
                async fn m(&self);
            }
        ),
    );
    assert!(out.contains("\"Other::m()->()\""), "{out}");
}

/// Odd inputs give errors, never a panic.
#[test]
fn odd_inputs_do_not_panic() {
    let attrs = [
        quote!(),
        quote!(id),
        quote!(id =),
        quote!(id = "x"),
        quote!(id = -1),
        quote!(id = 99999999999999999999999999),
        quote!(id = 1, id = 2),
        quote!(id = 1,, name = ""),
        quote!(crate = 5),
        quote!(id = 1, what(x, y), name = "n"),
        quote!((id = 1)),
    ];
    let items = [
        quote!(),
        quote!(
            struct S;
        ),
        quote!(
            fn f() {}
        ),
        quote!(
            trait T {}
        ),
        quote!(
            trait T<A>
            where
                A: Copy,
            {
                type X;
                const C: u8;
                m!();
            }
        ),
        quote!(
            unsafe auto trait T {}
        ),
        quote!(
            trait T {
                fn m();
                async fn n(self: Box<Self>);
                async fn o(&'a self);
            }
        ),
        quote!(
            trait T {
                #[mesh]
                async fn m(&self);
                #[mesh = 3]
                async fn n(&self);
            }
        ),
        quote!(
            trait T {
                #[mesh(id)]
                async fn m(&self);
                #[mesh(id = 1, id = 2, x = [1, 2], y(z))]
                async fn n(&self);
            }
        ),
        quote!(
            trait T {
                async fn m(&self, _: u8, ref x: u8, y @ _: u8, (a, b): (u8, u8));
            }
        ),
        quote!(
            trait T {
                async fn m(&self, x: &'a [impl Fn(_) -> Self]) -> *const u8;
            }
        ),
        quote!(
            trait T {
                async fn r#type(&self);
                async fn r#new(&self);
            }
        ),
        quote!(
            trait T {
                async fn m(&self, x: u8, ctx: CallContext);
                #[mesh(oneway)]
                async fn n(&self) -> Result<(), ()>;
            }
        ),
        quote!(
            trait T {
                async fn m(&self) -> Result<u8>;
                async fn n(&self) -> Result<u8, u8, u8>;
                async fn o(&self) -> Result<'static, u8>;
            }
        ),
        quote!(
            trait T {
                async fn m(&self) {
                    body()
                }
                async fn n(&self, mut x: u8) -> u8 {
                    x += 1;
                    x
                }
            }
        ),
        quote!(
            trait T {
                async fn a(&self);
                async fn A(&self);
                async fn a_fingerprint(&self);
                async fn service_name(&self);
            }
        ),
    ];
    for a in &attrs {
        for i in &items {
            let _ = run(a.clone(), i.clone());
        }
    }
}

#[test]
fn computed_ids_past_the_reserved_start_are_errors() {
    let out = run(
        quote!(id = 64999),
        quote!(
            trait T {
                async fn a(&self);
                async fn b(&self);
            }
        ),
    );
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("65000"), "{out}");
}

/// One-way methods are broadcast through the relay tree with their fingerprint.
#[test]
fn one_way_methods_are_in_the_broadcast() {
    let out = run(
        quote!(id = 1000),
        quote! {
            pub trait Greeter {
                #[mesh(oneway)] async fn notify(&self, msg: String);
                #[mesh(unreliable)] async fn tick(&self, n: u64);
            }
        },
    );
    let broadcast = out
        .split("pub struct GreeterBroadcast")
        .nth(1)
        .and_then(|b| b.split("pub struct GreeterServer").next())
        .unwrap_or_default();
    for needle in [
        "pub fn with_limit (self , limit : usize) -> Self",
        "pub async fn notify (& self , msg : String)",
        "self . inner . send (:: mesh_core :: rpc :: Command :: new (GreeterClient :: NOTIFY) . with_fingerprint (GreeterClient :: NOTIFY_FINGERPRINT) , & (msg ,)) . await",
        "pub async fn tick (& self , n : u64)",
        "self . inner . usend (:: mesh_core :: rpc :: Command :: new (GreeterClient :: TICK) . with_fingerprint (GreeterClient :: TICK_FINGERPRINT) , & (n ,)) . await",
    ] {
        assert!(
            broadcast.contains(needle),
            "missing {needle:?} in {broadcast}"
        );
    }
}

#[test]
fn byte_vectors_are_recognised() {
    let yes = [
        "Vec<u8>",
        "std::vec::Vec<u8>",
        "::std::vec::Vec<u8>",
        "alloc::vec::Vec<u8>",
        "vec::Vec<u8>",
        "Vec<core::primitive::u8>",
        "(Vec<u8>)",
    ];
    let no = [
        "Vec<i8>",
        "Vec<Vec<u8>>",
        "Vec<u8, A>",
        "my::Vec<u8>",
        "::Vec<u8>",
        "Option<Vec<u8>>",
        "[u8; 4]",
        "bytes::Bytes",
        "Vec<mine::u8>",
    ];
    for t in yes {
        let ty: syn::Type = syn::parse_str(t).unwrap();
        assert!(crate::types::is_byte_vec(&ty), "{t}");
    }
    for t in no {
        let ty: syn::Type = syn::parse_str(t).unwrap();
        assert!(!crate::types::is_byte_vec(&ty), "{t}");
    }
}
