//! # mesh-syntax
//!
//! How a `#[mesh_service]` trait and a `#[derive(SharedObject)]` struct are read and
//! checked: command ids, delivery kinds, signature texts (what each method's fingerprint
//! hashes), shared-object field ids and kinds. The `mesh-macros` expansion and the
//! `mesh-build` build-script helper both use this crate, so what the build checks is exactly
//! what the macros generate.
//!
//! Every check reports to an [`Errors`](errors::Errors) collector at the offending tokens
//! instead of stopping at the first problem.
//!
//! ```
//! use mesh_syntax::{analyze::analyze, args::parse_service_args, errors::Errors};
//!
//! let item: syn::ItemTrait = syn::parse_quote! {
//!     pub trait Greeter {
//!         async fn hello(&self, name: String) -> String;
//!         #[mesh(oneway)]
//!         async fn notify(&self, text: String);
//!     }
//! };
//! let mut errors = Errors::default();
//! let args = parse_service_args(quote::quote!(id = 1000), &mut errors);
//! let methods = analyze(&item, &args, &mut errors);
//! assert_eq!(errors.count(), 0);
//! assert_eq!(methods[1].id, 1001);
//! assert_eq!(methods[0].signature_text, "Greeter::hello(String)->String");
//! ```

pub mod analyze;
pub mod args;
pub mod errors;
pub mod shared_object;
pub mod types;

/// The fingerprint of a signature text: 32-bit FNV-1a, never 0 (0 means "not checked").
///
/// The same function as `mesh_core::rpc::fingerprint` (mesh-core's tests check they agree),
/// here so build tools compute fingerprints without linking the runtime.
pub const fn fingerprint(text: &str) -> u32 {
    let b = text.as_bytes();
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    if h == 0 { 1 } else { h }
}
