//! # mesh-macros
//!
//! The `#[mesh_service]` attribute of [mesh-core](../mesh_core/index.html): write a trait of
//! `async fn`s, get a typed client, a broadcast handle and a server for it. Use it through
//! `mesh_core::mesh_service` (this crate is an implementation detail of mesh-core).
//!
//! ## A service in four steps
//!
//! ```
//! use std::time::Duration;
//!
//! use mesh_core::rpc::{CallContext, CallError};
//! use mesh_core::{Discovery, LocalRegistry, Mesh, NodeId, Target, mesh_service};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! pub enum MathError { DivByZero }
//!
//! // 1. Declare the service: a trait with a base command id. Each method is one command; its
//! //    id is the base id plus the method's position unless pinned. New methods go at the end.
//! #[mesh_service(id = 1000)]
//! pub trait Greeter {
//!     /// Says hello (id 1000).
//!     async fn hello(&self, name: String) -> String;
//!     /// The error of a `Result` method reaches the caller as `CallError::Remote` (1001).
//!     async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
//!     /// A `CallContext` first argument is filled in by the server, not sent (1002).
//!     async fn who(&self, ctx: CallContext) -> Option<NodeId>;
//!     /// A pinned id.
//!     #[mesh(id = 1010)]
//!     async fn pinned(&self) -> u32;
//!     /// Reliable one-way: no response; the call resolves on acknowledgement (1004).
//!     #[mesh(oneway)]
//!     async fn notify(&self, msg: String);
//!     /// One unreliable datagram: may be lost, never retried (1005).
//!     #[mesh(unreliable)]
//!     async fn tick(&self, n: u64);
//! }
//!
//! // 2. Implement it with plain `async fn`s (their futures must be `Send`: handlers run on
//! //    tokio tasks).
//! struct MyGreeter;
//!
//! impl Greeter for MyGreeter {
//!     async fn hello(&self, name: String) -> String {
//!         format!("hi {name}")
//!     }
//!     async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
//!         a.checked_div(b).ok_or(MathError::DivByZero)
//!     }
//!     async fn who(&self, ctx: CallContext) -> Option<NodeId> {
//!         ctx.sender_id()
//!     }
//!     async fn pinned(&self) -> u32 {
//!         7
//!     }
//!     async fn notify(&self, msg: String) {
//!         println!("{msg}");
//!     }
//!     async fn tick(&self, _n: u64) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = LocalRegistry::new(); // in-process discovery, for the example
//! let server = Mesh::builder().node_type("math").discovery(Discovery::local_registry(&registry)).start().await?;
//! // Two meshes run in this process: the one clients use by default is chosen explicitly.
//! let mesh = Mesh::builder()
//!     .node_type("web")
//!     .discovery(Discovery::local_registry(&registry))
//!     .default_for_process()
//!     .start()
//!     .await?;
//! let addr = server.id();
//!
//! // 3. Serve it: the guard unregisters the service when dropped.
//! let _serving = server.serve(GreeterServer::new(MyGreeter))?;
//!
//! // 4. Call it from any node: one node, through the process's default mesh or a given one...
//! let hi: Result<String, CallError> = GreeterClient::for_node(addr).hello("bob".into()).await;
//! assert_eq!(hi?, "hi bob");
//! let d = Duration::from_secs(2);
//! let q: Result<i64, CallError<MathError>> =
//!     GreeterClient::for_node(addr).on(&mesh).with_timeout(d).divide(1, 0).await;
//! assert_eq!(q, Err(CallError::Remote(MathError::DivByZero)));
//! assert_eq!(GreeterClient::for_node(addr).on(&mesh).who().await?, Some(mesh.id()));
//! GreeterClient::for_node(addr).on(&mesh).notify("news".into()).await?;
//!
//! // ...round-robin over the nodes of a type that serve the method (or one at random)...
//! # for _ in 0..1000 {
//! #     if !mesh.nodes_serving("math", GreeterClient::HELLO).is_empty() { break }
//! #     tokio::time::sleep(Duration::from_millis(10)).await;
//! # }
//! let r = GreeterClient::for_type("math").hello("ann".into()).await;
//! assert_eq!(r?, "hi ann");
//! let r = GreeterClient::random_of_type("math").on(&mesh).pinned().await;
//! assert_eq!(r?, 7);
//!
//! // ...or every node of a type (or a list of nodes): one result per node for a request, one
//! // message through a relay tree for a one-way method.
//! let all: Vec<(Target, Result<String, CallError>)> =
//!     GreeterBroadcast::to_type("math").hello("x".into()).await?;
//! assert_eq!(all.len(), 1);
//! GreeterBroadcast::to_type("math").on(&mesh).with_limit(4).notify("to all".into()).await?;
//!
//! // The ids are constants.
//! assert_eq!((GreeterClient::HELLO, GreeterClient::PINNED, GreeterClient::TICK), (1000, 1010, 1005));
//! # mesh.stop().await;
//! # server.stop().await;
//! # Ok(()) }
//! ```
//!
//! ## What is generated
//!
//! For `trait Greeter`:
//!
//! * the trait itself, with each `async fn` turned into
//!   `fn ...(&self, ..) -> impl Future<Output = T> + Send` and `Send + Sync + 'static`
//!   supertraits, so implementations are spawnable;
//! * `GreeterClient`: `for_node`, `for_type`, `random_of_type`, `on`, `with_timeout`,
//!   `as_client`, one `async fn` per method returning `Result<T, CallError>` (or
//!   `Result<T, CallError<E>>` for a method returning `Result<T, E>`), and the constants
//!   `SERVICE_NAME`, `HELLO` (the command id), `HELLO_FINGERPRINT`, ... per method;
//! * `GreeterBroadcast`: `to_type`, `to_nodes`, `on`, `with_timeout`, `with_limit`,
//!   `as_broadcast`, and one `async fn` per method:
//!   * a request method calls every target concurrently and returns every result,
//!     `Result<Vec<(Target, Result<T, CallError<..>>)>, CallError>`;
//!   * a one-way method (`oneway` or `unreliable`) returns `Result<(), CallError>`: the
//!     arguments are encoded once and sent through a relay tree, reliably or as unreliable
//!     datagrams. This node sends to at most `limit` targets, each of which forwards to at most
//!     `limit` more; `with_limit(n)` sets it, the default is the mesh's `relay_limit` (2 unless
//!     configured). The method's fingerprint travels with the message as with the client's
//!     one-way methods: a node serving another signature of the method drops its copy
//!     (counted in `Mesh::rpc_stats().incompatible`) and still forwards the others'. A
//!     `CallContext` of a relayed message names the node that started the broadcast (when
//!     the receiving node knows it; otherwise the hop it came from);
//! * `GreeterServer<S: Greeter>`: `new(S)`, `from_arc(Arc<S>)`, and
//!   `impl mesh_core::rpc::Service` for [`Mesh::serve`](../mesh_core/struct.Mesh.html#method.serve).
//!
//! The generated types and their members have the trait's visibility; every generated item
//! is documented (for `missing_docs`) and uses absolute paths (`::mesh_core`, `::core`,
//! `::std`), so the macro works in `#![no_implicit_prelude]` modules.
//!
//! Arguments are sent as one tuple encoded with postcard (serde): they must be owned
//! (`Serialize + DeserializeOwned + Send + 'static`). A `CallContext` first argument is not
//! sent; the server passes the call's context.
//!
//! An argument or return value written `Vec<u8>` (also `std::vec::Vec<u8>`, or the `T` of a
//! `Result<Vec<u8>, E>`) is carried as bytes, copied once, instead of visited byte by byte
//! by serde: as fast as `bytes::Bytes`, and with the same encoding as a plain `Vec<u8>`, so
//! nodes built either way understand each other. A byte vector nested in your own types is
//! not seen by the macro: mark it `#[serde(with = "mesh_core::codec::serde_bytes")]`.
//!
//! ## Compatibility rules
//!
//! * **Add new methods at the end.** Ids are positional: inserting, reordering or removing a
//!   method shifts the ids of the methods after it (pin them with `#[mesh(id = N)]` when you
//!   must remove one). Ids 65000-65535 are reserved for the framework; the macro rejects
//!   them, ids past 65535, and duplicates at compile time.
//! * **Each method has a fingerprint**: a hash of the service name, the method name and the
//!   token text of its argument and return types. A node whose signature differs answers
//!   `CallError::Incompatible` naming the method instead of misreading the bytes. Types are
//!   compared as written: spell them the same way on both sides (`String`, not
//!   `std::string::String` on one of them), and rename a service with `name = ".."` only on
//!   both sides.
//!
//! ## Attribute reference
//!
//! * `#[mesh_service(id = N)]`: the base command id (required). Optional:
//!   `name = "Greeter"` (the service name; default the trait's name) and
//!   `crate = path` (where mesh-core is, default `::mesh_core`).
//! * On methods: `#[mesh(id = N)]`, `#[mesh(oneway)]` (reliable one-way; the method returns
//!   `()`), `#[mesh(unreliable)]` (one unreliable datagram; returns `()`); combine them as in
//!   `#[mesh(id = 1200, unreliable)]`.
//!
//! Rejected with an error at the offending tokens: non-`async` or generic methods, receivers
//! other than `&self`, argument patterns, references, `impl Trait`, `_` and `Self` in
//! signatures, a `CallContext` that is not the first argument, a method name that the
//! generated types already use (`new`, `for_node`, `on`, ...), associated types or constants,
//! generic traits, and unknown `#[mesh(..)]` options.

mod generate;
mod shared;
#[cfg(test)]
mod tests;

// The checks live in mesh-syntax, which mesh-build shares, so the build sees what the
// macros see.
use mesh_syntax::{analyze, args, errors, types};

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Error, ItemTrait};

use crate::analyze::analyze;
use crate::args::parse_service_args;
use crate::errors::Errors;
use crate::generate::{generate, sanitize_trait};

/// Turns a trait of `async fn`s into a mesh service: the trait (with `Send` futures), a
/// typed client `<Trait>Client`, a broadcast handle `<Trait>Broadcast` and a server
/// `<Trait>Server`.
///
/// ```
/// use mesh_core::mesh_service;
///
/// #[mesh_service(id = 1000)]
/// pub trait Greeter {
///     /// Command 1000.
///     async fn hello(&self, name: String) -> String;
///     /// Command 1001: the error reaches the caller as `CallError::Remote(e)`.
///     async fn parse(&self, text: String) -> Result<u32, String>;
///     /// Command 1010 (pinned).
///     #[mesh(id = 1010)]
///     async fn pinned(&self) -> u32;
///     /// Command 1003: reliable one-way, no response.
///     #[mesh(oneway)]
///     async fn notify(&self, msg: String);
/// }
///
/// assert_eq!(GreeterClient::HELLO, 1000);
/// assert_eq!(GreeterClient::PARSE, 1001);
/// assert_eq!(GreeterClient::PINNED, 1010);
/// assert_eq!(GreeterClient::NOTIFY, 1003);
/// assert_eq!(GreeterClient::SERVICE_NAME, "Greeter");
/// ```
///
/// Arguments: `id = N` (required, the first method's command id; the others follow in
/// declaration order, so **new methods go at the end**), `name = "..."` (the service name,
/// default the trait's name; part of every method's fingerprint) and `crate = path` (the path
/// of mesh-core, default `::mesh_core`).
///
/// Method options, in `#[mesh(..)]`: `id = N` pins the method's id; `oneway` makes it a
/// reliable one-way message and `unreliable` a single unreliable datagram (both return `()`
/// and have no response).
///
/// See the [crate documentation](crate) for the whole tutorial and what is generated.
#[proc_macro_attribute]
pub fn mesh_service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr.into(), item.into()).into()
}

/// The whole expansion: the generated items, or the errors and the trait as written.
fn expand(attr: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = Errors::default();
    let args = parse_service_args(attr, &mut errors);
    let mut item: ItemTrait = match syn::parse2(item.clone()) {
        Ok(t) => t,
        Err(_) => {
            let span = not_a_trait_span(&item);
            let e = Error::new(
                span,
                "#[mesh_service] goes on a trait of async methods, e.g. \
                 `#[mesh_service(id = 1000)] pub trait Greeter { async fn hello(&self, name: String) -> String; }`",
            )
            .to_compile_error();
            return quote!(#e #item);
        }
    };
    let methods = analyze(&item, &args, &mut errors);
    match errors.into_error() {
        Some(e) => {
            let e = e.to_compile_error();
            sanitize_trait(&mut item);
            quote!(#e #item)
        }
        None => generate(item, &args, &methods),
    }
}

/// Where to point when the attribute is not on a trait: the item's keyword if it has one.
fn not_a_trait_span(item: &TokenStream2) -> Span {
    match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(s)) => s.struct_token.span,
        Ok(syn::Item::Enum(e)) => e.enum_token.span,
        Ok(syn::Item::Fn(f)) => f.sig.fn_token.span,
        Ok(syn::Item::Impl(i)) => i.impl_token.span,
        Ok(syn::Item::Mod(m)) => m.mod_token.span,
        Ok(syn::Item::Type(t)) => t.type_token.span,
        _ => Span::call_site(),
    }
}

/// Makes a struct with named fields a shared object type (see `mesh_core::shared`).
///
/// Field options, in `#[shared(..)]`: `min = N`, `max = N` bound an integer field (writes
/// outside are refused, or clamped with `on_bound = clamp`); `max_len = N` bounds a map
/// (`BTreeMap`, `HashMap`); `id = N` pins the field id (default: its position). Generates
/// `<Name>Handle` (one getter per field; `inc_`, `set_`, `cas_` on integers; `set_`, `cas_`
/// on values; `_put`, `_delete` on maps) and `<Name>Batch`.
#[proc_macro_derive(SharedObject, attributes(shared))]
pub fn derive_shared_object(item: TokenStream) -> TokenStream {
    shared::derive(item.into()).into()
}
