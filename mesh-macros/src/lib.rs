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
//! let mesh = Mesh::builder().node_type("web").discovery(Discovery::local_registry(&registry)).start().await?;
//! let addr = server.id();
//!
//! // 3. Serve it: the guard unregisters the service when dropped.
//! let _serving = server.serve(GreeterServer::new(MyGreeter))?;
//!
//! // 4. Call it from any node: one node, through the process's default mesh or a given one...
//! mesh.set_default();
//! let hi: Result<String, CallError> = GreeterClient::for_node(addr).hello("bob".into()).await;
//! assert_eq!(hi?, "hi bob");
//! let d = Duration::from_secs(2);
//! let q: Result<i64, CallError<MathError>> =
//!     GreeterClient::new(&mesh, addr).with_timeout(d).divide(1, 0).await;
//! assert_eq!(q, Err(CallError::Remote(MathError::DivByZero)));
//! assert_eq!(GreeterClient::new(&mesh, addr).who().await?, Some(mesh.id()));
//! GreeterClient::new(&mesh, addr).notify("news".into()).await?;
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
//! // ...or every node of a type (or a list of nodes), one result per node.
//! let all: Vec<(Target, Result<String, CallError>)> =
//!     GreeterBroadcast::to_type("math").hello("x".into()).await?;
//! assert_eq!(all.len(), 1);
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
//! * `GreeterClient`: `for_node`, `new`, `for_type`, `random_of_type`, `on`, `with_timeout`,
//!   `as_client`, one `async fn` per method returning `Result<T, CallError>` (or
//!   `Result<T, CallError<E>>` for a method returning `Result<T, E>`), and the constants
//!   `SERVICE_NAME`, `HELLO` (the command id), `HELLO_FINGERPRINT`, ... per method;
//! * `GreeterBroadcast`: `to_type`, `to_nodes`, `on`, `with_timeout`, `as_broadcast`, one
//!   `async fn` per request method (not the one-way ones) returning
//!   `Result<Vec<(Target, Result<T, CallError<..>>)>, CallError>`;
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

use std::collections::HashMap;
use std::fmt::Display;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, format_ident, quote};
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::visit::Visit;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, LitInt, LitStr, Pat, PatIdent,
    Path, PathArguments, ReturnType, Signature, Token, TraitItem, TraitItemFn, Type,
};

/// First command id reserved for the framework (`mesh_core::rpc::RESERVED_START`; the
/// mesh-core tests check the two agree).
const RESERVED_START: u64 = 65000;

/// Names the generated client and broadcast types define themselves: a method may not use
/// them.
const RESERVED_NAMES: &[&str] = &[
    "new",
    "for_node",
    "for_type",
    "random_of_type",
    "on",
    "with_timeout",
    "as_client",
    "to_type",
    "to_nodes",
    "as_broadcast",
    "clone",
];

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

/// Errors collected while expanding; reported together.
#[derive(Default)]
struct Errors(Option<Error>, usize);

impl Errors {
    fn push(&mut self, e: Error) {
        self.1 += 1;
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn at(&mut self, span: Span, msg: impl Display) {
        self.push(Error::new(span, msg));
    }

    fn spanned(&mut self, tokens: impl ToTokens, msg: impl Display) {
        self.push(Error::new_spanned(tokens, msg));
    }

    fn count(&self) -> usize {
        self.1
    }
}

/// The arguments of `#[mesh_service(..)]`.
struct ServiceArgs {
    id: Option<u16>,
    name: Option<String>,
    krate: Path,
}

/// How a method is delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    OneWay,
    Unreliable,
}

/// What a method returns.
enum Output {
    /// A value (possibly `()`) that cannot fail remotely.
    Value(Box<Type>),
    /// `Result<T, E>`: `E` is the remote error.
    Fallible(Box<Type>, Box<Type>),
}

/// One method, checked.
struct MethodInfo {
    ident: Ident,
    name: String,
    id: u16,
    id_const: Ident,
    fp_const: Ident,
    kind: Kind,
    has_ctx: bool,
    args: Vec<(Ident, Type)>,
    output: Output,
    docs: Vec<Attribute>,
    signature_text: String,
}

/// The options of `#[mesh(..)]` on one method.
#[derive(Default)]
struct MethodOptions {
    id: Option<(u64, LitInt)>,
    oneway: bool,
    unreliable: bool,
}

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
    match errors.0 {
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

fn parse_service_args(attr: TokenStream2, errors: &mut Errors) -> ServiceArgs {
    let mut id: Option<u16> = None;
    let mut name: Option<String> = None;
    let mut krate: Option<Path> = None;
    let mut seen_id = false;
    let mut local = Errors::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("id") {
            let lit: LitInt = meta.value()?.parse()?;
            if seen_id {
                local.spanned(&meta.path, "`id` is given twice");
            }
            seen_id = true;
            match check_id(&lit, "the service id") {
                Ok(v) => id = Some(v),
                Err(e) => local.push(e),
            }
        } else if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if name.is_some() {
                local.spanned(&meta.path, "`name` is given twice");
            }
            let v = lit.value();
            if v.is_empty() {
                local.spanned(&lit, "the service name cannot be empty");
            } else {
                name = Some(v);
            }
        } else if meta.path.is_ident("crate") {
            let p: Path = meta.value()?.parse()?;
            if krate.is_some() {
                local.spanned(&meta.path, "`crate` is given twice");
            }
            krate = Some(p);
        } else {
            local.spanned(
                &meta.path,
                format!(
                    "unknown mesh_service argument `{}`: expected `id = N`, `name = \"..\"` or `crate = path`",
                    meta.path.to_token_stream().to_string().replace(' ', "")
                ),
            );
            skip_value(&meta)?;
        }
        Ok(())
    });
    let parsed = parser.parse2(attr);
    if let Some(e) = local.0 {
        errors.push(e);
    }
    if let Err(e) = parsed {
        errors.push(e);
    } else if !seen_id {
        errors.at(
            Span::call_site(),
            "missing the service id: write `#[mesh_service(id = 1000)]` (the first method's \
             command id; the others follow in declaration order)",
        );
    }
    ServiceArgs {
        id,
        name,
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::mesh_core)),
    }
}

/// Skips the value of an unknown option (`= expr` or `(..)`), so parsing goes on.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream2 = content.parse()?;
    }
    Ok(())
}

/// Checks an id literal: a u16 below the reserved range.
fn check_id(lit: &LitInt, what: &str) -> syn::Result<u16> {
    let v: u64 = lit.base10_parse().map_err(|_| {
        Error::new(
            lit.span(),
            format!("{what} must be an integer from 0 to {}", RESERVED_START - 1),
        )
    })?;
    id_in_range(v).map_err(|why| Error::new(lit.span(), format!("{what} {v} {why}")))
}

/// `Ok(id)` if `v` is a usable command id, else why not (to follow "id N ").
fn id_in_range(v: u64) -> Result<u16, String> {
    if v > u64::from(u16::MAX) {
        return Err(format!(
            "does not fit a command id (a u16: 0 to 65535; use an id below {RESERVED_START})"
        ));
    }
    if v >= RESERVED_START {
        return Err(format!(
            "is in the range reserved for the framework ({RESERVED_START}-65535): use an id below {RESERVED_START}"
        ));
    }
    // Checked above: fits.
    Ok(u16::try_from(v).unwrap_or_default())
}

fn parse_method_options(attrs: &[Attribute], errors: &mut Errors) -> MethodOptions {
    let mut o = MethodOptions::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("mesh")) {
        let r = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("id") {
                let lit: LitInt = meta.value()?.parse()?;
                if o.id.is_some() {
                    errors.spanned(&meta.path, "`id` is given twice");
                }
                match lit.base10_parse::<u64>() {
                    Ok(v) => o.id = Some((v, lit)),
                    Err(_) => errors.spanned(
                        &lit,
                        format!(
                            "a method id must be an integer from 0 to {}",
                            RESERVED_START - 1
                        ),
                    ),
                }
            } else if meta.path.is_ident("oneway") {
                if o.oneway {
                    errors.spanned(&meta.path, "`oneway` is given twice");
                }
                o.oneway = true;
            } else if meta.path.is_ident("unreliable") {
                if o.unreliable {
                    errors.spanned(&meta.path, "`unreliable` is given twice");
                }
                o.unreliable = true;
            } else {
                errors.spanned(
                    &meta.path,
                    format!(
                        "unknown #[mesh] option `{}`: expected `id = N`, `oneway` or `unreliable`",
                        meta.path.to_token_stream().to_string().replace(' ', "")
                    ),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            errors.push(e);
        }
    }
    o
}

/// Checks the trait and its methods; returns the methods that passed (the caller emits
/// nothing but errors if any check failed).
fn analyze(item: &ItemTrait, args: &ServiceArgs, errors: &mut Errors) -> Vec<MethodInfo> {
    let trait_ident = &item.ident;
    if let Some(u) = &item.unsafety {
        errors.spanned(u, "a mesh service trait cannot be `unsafe`");
    }
    if let Some(a) = &item.auto_token {
        errors.spanned(a, "a mesh service trait cannot be an auto trait");
    }
    if !item.generics.params.is_empty() {
        errors.spanned(
            &item.generics.params,
            "a mesh service trait cannot be generic: both sides must agree on every type",
        );
    }
    if let Some(w) = &item.generics.where_clause {
        errors.spanned(w, "a mesh service trait cannot have a where clause");
    }
    let service = args
        .name
        .clone()
        .unwrap_or_else(|| trait_ident.unraw().to_string());
    let mut methods = Vec::new();
    let mut index: u64 = 0;
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                let position = index;
                index += 1;
                if let Some(m) = analyze_method(f, position, &service, args.id, errors) {
                    methods.push(m);
                }
            }
            TraitItem::Type(t) => errors.spanned(
                t.type_token,
                "a mesh service trait holds only async methods: associated types cannot cross \
                 the network (use concrete types)",
            ),
            TraitItem::Const(c) => errors.spanned(
                c.const_token,
                "a mesh service trait holds only async methods: move the constant out of the trait",
            ),
            other => errors.spanned(other, "a mesh service trait holds only async methods"),
        }
    }
    check_unique(trait_ident, &methods, errors);
    methods
}

/// Duplicate ids and generated names that collide.
fn check_unique(trait_ident: &Ident, methods: &[MethodInfo], errors: &mut Errors) {
    let client = format_ident!("{}Client", trait_ident.unraw());
    let mut ids: HashMap<u16, &str> = HashMap::new();
    let mut consts: HashMap<String, String> = HashMap::new();
    consts.insert("SERVICE_NAME".into(), "the service name".into());
    for m in methods {
        if let Some(first) = ids.get(&m.id) {
            errors.spanned(
                &m.ident,
                format!(
                    "command id {} of `{}` is already used by `{}`: ids are the service id plus \
                     the method's position unless pinned with #[mesh(id = N)]; pick a free one",
                    m.id, m.name, first
                ),
            );
        } else {
            ids.insert(m.id, &m.name);
        }
        if RESERVED_NAMES.contains(&m.name.as_str()) {
            errors.spanned(
                &m.ident,
                format!(
                    "a method cannot be named `{}`: the generated `{client}` and `{}Broadcast` \
                     have their own `{}` (reserved: {}); rename the method",
                    m.name,
                    trait_ident.unraw(),
                    m.name,
                    RESERVED_NAMES.join(", ")
                ),
            );
        }
        for (c, what) in [
            (
                m.id_const.to_string(),
                format!("the command id of `{}`", m.name),
            ),
            (
                m.fp_const.to_string(),
                format!("the fingerprint of `{}`", m.name),
            ),
        ] {
            if let Some(other) = consts.get(&c) {
                errors.spanned(
                    &m.ident,
                    format!(
                        "`{}` would generate the constant `{client}::{c}`, which is already {other}; \
                         rename the method",
                        m.name
                    ),
                );
            } else {
                consts.insert(c, what);
            }
        }
    }
}

fn analyze_method(
    f: &TraitItemFn,
    position: u64,
    service: &str,
    base: Option<u16>,
    errors: &mut Errors,
) -> Option<MethodInfo> {
    let before = errors.count();
    let sig = &f.sig;
    let name = sig.ident.unraw().to_string();
    let options = parse_method_options(&f.attrs, errors);
    for a in &f.attrs {
        if a.path().is_ident("cfg") || a.path().is_ident("cfg_attr") {
            errors.spanned(
                a,
                "conditional methods are not supported in a mesh service: every node must see \
                 the same methods with the same ids",
            );
        }
    }
    check_signature(sig, errors);

    // Arguments: the receiver, an optional context, then what is sent.
    let mut has_ctx = false;
    let mut args = Vec::new();
    let mut typed_index = 0usize;
    let mut saw_receiver = false;
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                saw_receiver = true;
                if r.colon_token.is_some() {
                    errors.spanned(
                        r,
                        "mesh service methods take `&self`; `self: Type` receivers are not supported",
                    );
                } else if r.reference.is_none() {
                    errors.spanned(
                        r,
                        "mesh service methods take `&self`, not `self` by value: the server calls \
                         the same instance for every request",
                    );
                } else if let Some(m) = &r.mutability {
                    errors.spanned(
                        m,
                        "mesh service methods take `&self`, not `&mut self`: requests run \
                         concurrently; use interior mutability (a Mutex, atomics)",
                    );
                } else if let Some((_, Some(lt))) = &r.reference {
                    errors.spanned(lt, "write `&self` without a lifetime");
                }
            }
            FnArg::Typed(pt) => {
                let i = typed_index;
                typed_index += 1;
                if is_call_context(&pt.ty) {
                    if i == 0 {
                        has_ctx = true;
                    } else {
                        errors.spanned(
                            &pt.ty,
                            "the `CallContext` must be the first argument after `&self` (it is \
                             not sent: the server fills it in)",
                        );
                    }
                    continue;
                }
                let ident = match &*pt.pat {
                    Pat::Ident(PatIdent {
                        by_ref: None,
                        subpat: None,
                        ident,
                        ..
                    }) => ident.clone(),
                    Pat::Wild(_) => Ident::new(&format!("arg{i}"), Span::mixed_site()),
                    other => {
                        errors.spanned(
                            other,
                            "patterns are not supported in mesh service arguments: name the \
                             argument (`pair: (i32, i32)`) and destructure it in the implementation",
                        );
                        continue;
                    }
                };
                check_type(&pt.ty, "an argument", errors);
                args.push((ident, (*pt.ty).clone()));
            }
        }
    }
    if !saw_receiver {
        errors.spanned(
            &sig.ident,
            "mesh service methods take `&self` as their first argument (associated functions \
             cannot be called remotely)",
        );
    }

    // What it returns.
    let kind = if options.unreliable {
        Kind::Unreliable
    } else if options.oneway {
        Kind::OneWay
    } else {
        Kind::Request
    };
    let output = match &sig.output {
        ReturnType::Default => Output::Value(Box::new(syn::parse_quote!(()))),
        ReturnType::Type(_, ty) => {
            check_type(ty, "the return type", errors);
            match fallible(ty) {
                Some((t, e)) => Output::Fallible(Box::new(t), Box::new(e)),
                None => Output::Value(ty.clone()),
            }
        }
    };
    if kind != Kind::Request
        && let ReturnType::Type(_, ty) = &sig.output
        && !is_unit(ty)
    {
        let which = if kind == Kind::OneWay {
            "oneway"
        } else {
            "unreliable"
        };
        errors.spanned(
            ty,
            format!(
                "a #[mesh({which})] method returns `()`: it gets no response; remove the return \
                 type, or remove `{which}` to make it a request"
            ),
        );
    }

    // Its id.
    let id = match (&options.id, base) {
        (Some((v, lit)), _) => match id_in_range(*v) {
            Ok(id) => Some(id),
            Err(why) => {
                errors.spanned(lit, format!("the id {v} of `{name}` {why}"));
                None
            }
        },
        (None, Some(base)) => {
            let v = u64::from(base) + position;
            match id_in_range(v) {
                Ok(id) => Some(id),
                Err(why) => {
                    errors.spanned(
                        &sig.ident,
                        format!(
                            "`{name}` would get the command id {v} (the service id {base} + its \
                             position {position}), which {why}; or pin it with #[mesh(id = N)]"
                        ),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    };

    if errors.count() != before {
        return None;
    }
    let id = id?;
    let upper = name.to_uppercase();
    // Upper-casing some Unicode names gives no identifier: report it rather than panic.
    let constant = |text: String| match syn::parse_str::<Ident>(&text) {
        Ok(mut i) => {
            i.set_span(sig.ident.span());
            Some(i)
        }
        Err(_) => None,
    };
    let (Some(id_const), Some(fp_const)) = (
        constant(upper.clone()),
        constant(format!("{upper}_FINGERPRINT")),
    ) else {
        errors.spanned(
            &sig.ident,
            format!("`{name}` upper-cased (`{upper}`) is not an identifier for its id constant: rename the method"),
        );
        return None;
    };
    let ret_text = match &sig.output {
        ReturnType::Default => "()".to_string(),
        ReturnType::Type(_, ty) => type_text(ty),
    };
    let arg_text: Vec<String> = args.iter().map(|(_, t)| type_text(t)).collect();
    let signature_text = format!("{service}::{name}({})->{ret_text}", arg_text.join(","));
    Some(MethodInfo {
        ident: sig.ident.clone(),
        name,
        id,
        id_const,
        fp_const,
        kind,
        has_ctx,
        args,
        output,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        signature_text,
    })
}

/// `async`, not generic, not const/unsafe/extern/variadic.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(c) = &sig.constness {
        errors.spanned(c, "mesh service methods cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        errors.spanned(u, "mesh service methods cannot be `unsafe`");
    }
    if let Some(a) = &sig.abi {
        errors.spanned(a, "mesh service methods cannot have an ABI");
    }
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!(
                "mesh service methods must be `async fn`: write `async fn {}(..)`",
                sig.ident
            ),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "mesh service methods cannot be generic: both sides must agree on the exact types \
             sent; use concrete types",
        );
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.spanned(w, "mesh service methods cannot have a where clause");
    }
    if let Some(v) = &sig.variadic {
        errors.spanned(v, "mesh service methods cannot be variadic");
    }
}

/// Rejects what cannot cross the network or be named by the generated code.
fn check_type(ty: &Type, what: &'static str, errors: &mut Errors) {
    struct Check<'a> {
        what: &'static str,
        errors: &'a mut Errors,
    }
    impl<'ast> Visit<'ast> for Check<'_> {
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            self.errors.spanned(
                r,
                format!(
                    "references are not supported in {} of a mesh service: values cross the \
                     network, so take an owned type (`String` for `&str`, `Vec<T>` for `&[T]`)",
                    self.what
                ),
            );
        }
        fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
            self.errors.spanned(
                t,
                format!(
                    "`impl Trait` is not supported in {} of a mesh service: name a concrete type",
                    self.what
                ),
            );
        }
        fn visit_type_infer(&mut self, t: &'ast syn::TypeInfer) {
            self.errors.spanned(
                t,
                "`_` is not allowed in a mesh service signature: write the type",
            );
        }
        fn visit_type_ptr(&mut self, t: &'ast syn::TypePtr) {
            self.errors.spanned(
                t,
                "raw pointers are not supported in a mesh service: values cross the network",
            );
        }
        fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
            if l.ident != "static" {
                self.errors.spanned(
                    l,
                    format!(
                        "borrowed types are not supported in {} of a mesh service: take an owned \
                         type (only `'static` lifetimes)",
                        self.what
                    ),
                );
            }
        }
        fn visit_path(&mut self, p: &'ast syn::Path) {
            if p.leading_colon.is_none()
                && let Some(first) = p.segments.first()
                && first.ident == "Self"
            {
                self.errors.spanned(
                    &first.ident,
                    "`Self` is not allowed in a mesh service signature: the generated client has \
                     no `Self` of the trait; name the type",
                );
                return;
            }
            syn::visit::visit_path(self, p);
        }
    }
    Check { what, errors }.visit_type(ty);
}

/// `CallContext` (any path ending in it, without generic arguments).
fn is_call_context(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "CallContext" && s.arguments.is_none()),
        Type::Paren(p) => is_call_context(&p.elem),
        Type::Group(g) => is_call_context(&g.elem),
        _ => false,
    }
}

fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(t) => t.elems.is_empty(),
        Type::Paren(p) => is_unit(&p.elem),
        Type::Group(g) => is_unit(&g.elem),
        _ => false,
    }
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments): `(T, E)`.
fn fallible(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else {
        return None;
    };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(a) = &last.arguments else {
        return None;
    };
    let mut types = a.args.iter().filter_map(|g| match g {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let (t, e) = (types.next()?, types.next()?);
    if types.next().is_some() || a.args.len() != 2 {
        return None;
    }
    Some((t, e))
}

/// The token text of a type without whitespace (what fingerprints hash).
fn type_text(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// After errors: the trait as written, minus what would add errors of its own (`#[mesh]`
/// attributes, patterns in methods without bodies), so users' impls do not cascade.
fn sanitize_trait(item: &mut ItemTrait) {
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("mesh"));
            if f.default.is_none() {
                strip_patterns(&mut f.sig);
            }
        }
    }
}

/// Bodyless methods take plain names: `mut x` and patterns become `x` / `_`.
fn strip_patterns(sig: &mut Signature) {
    for input in &mut sig.inputs {
        if let FnArg::Typed(pt) = input {
            match &mut *pt.pat {
                Pat::Ident(pi) if pi.subpat.is_none() => {
                    pi.mutability = None;
                    pi.by_ref = None;
                }
                Pat::Wild(_) => {}
                other => *other = syn::parse_quote!(_),
            }
        }
    }
}

fn doc(text: impl AsRef<str>) -> TokenStream2 {
    let text = text.as_ref();
    quote!(#[doc = #text])
}

fn kind_text(m: &MethodInfo) -> &'static str {
    match (m.kind, &m.output) {
        (Kind::OneWay, _) => "one-way",
        (Kind::Unreliable, _) => "unreliable one-way",
        (Kind::Request, Output::Fallible(..)) => "request (fallible)",
        (Kind::Request, Output::Value(_)) => "request",
    }
}

fn generate(mut item: ItemTrait, args: &ServiceArgs, methods: &[MethodInfo]) -> TokenStream2 {
    let krate = &args.krate;
    let vis = &item.vis;
    let trait_ident = item.ident.clone();
    let bare = trait_ident.unraw();
    let client = format_ident!("{}Client", bare, span = trait_ident.span());
    let broadcast = format_ident!("{}Broadcast", bare, span = trait_ident.span());
    let server = format_ident!("{}Server", bare, span = trait_ident.span());
    let service = args.name.clone().unwrap_or_else(|| bare.to_string());
    let base = args.id.unwrap_or_default();

    // ---- the trait -------------------------------------------------------------------------
    let mut table = String::new();
    for m in methods {
        table.push_str(&format!("\n| `{}` | {} | {} |", m.name, m.id, kind_text(m)));
    }
    let trait_docs = [
        String::new(),
        format!("# Mesh service `{service}`"),
        String::new(),
        format!(
            "Generated by `#[mesh_service]`: serve an implementation with [`{server}`], call it \
             with [`{client}`] (one node, balanced or random) or [`{broadcast}`] (many nodes)."
        ),
        String::new(),
        format!("| method | command id | kind |\n|---|---|---|{table}"),
        String::new(),
        format!(
            "Ids are the service id ({base}) plus the method's position unless pinned with \
             `#[mesh(id = N)]`: **add new methods at the end**, never reorder or remove methods \
             (pin the ids of the ones after a removed method), so nodes built from different \
             versions agree. A method whose signature differs between two nodes fails with \
             `CallError::Incompatible`."
        ),
    ];
    let trait_docs: Vec<TokenStream2> = trait_docs.iter().map(doc).collect();
    let by_ident: HashMap<String, &MethodInfo> =
        methods.iter().map(|m| (m.ident.to_string(), m)).collect();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        f.attrs.retain(|a| !a.path().is_ident("mesh"));
        if let Some(m) = by_ident.get(&f.sig.ident.to_string()) {
            let extra = format!(
                "Command id {} (`{client}::{}`), {}.",
                m.id,
                m.id_const,
                kind_text(m)
            );
            let has_docs = f.attrs.iter().any(|a| a.path().is_ident("doc"));
            if has_docs {
                f.attrs.push(syn::parse_quote!(#[doc = ""]));
            }
            f.attrs.push(syn::parse_quote!(#[doc = #extra]));
        }
        desugar(f);
    }
    let supertraits: TokenStream2 = if item.supertraits.is_empty() {
        quote!(::core::marker::Send + ::core::marker::Sync + 'static)
    } else {
        let s = &item.supertraits;
        let plus = if s.trailing_punct() {
            quote!()
        } else {
            quote!(+)
        };
        quote!(#s #plus ::core::marker::Send + ::core::marker::Sync + 'static)
    };
    let trait_attrs = &item.attrs;
    let trait_token = &item.trait_token;
    let items = &item.items;
    let the_trait = quote! {
        #(#trait_attrs)*
        #(#trait_docs)*
        #vis #trait_token #trait_ident: #supertraits {
            #(#items)*
        }
    };

    // ---- constants ---------------------------------------------------------------------------
    let service_lit = LitStr::new(&service, Span::call_site());
    let consts = methods.iter().map(|m| {
        let MethodInfo {
            id_const,
            fp_const,
            id,
            ident,
            signature_text,
            ..
        } = m;
        let id_doc = format!("Command id of [`{trait_ident}::{ident}`]: {id}.");
        let fp_doc = format!(
            "Signature fingerprint of [`{trait_ident}::{ident}`]: the hash of `{signature_text}` \
             (sent with every call and checked by the server)."
        );
        let text = LitStr::new(signature_text, Span::call_site());
        quote! {
            #[doc = #id_doc]
            #vis const #id_const: u16 = #id;
            #[doc = #fp_doc]
            #vis const #fp_const: u32 = #krate::rpc::fingerprint(#text);
        }
    });

    // ---- client ----------------------------------------------------------------------------
    let client_methods = methods.iter().map(|m| {
        let ident = &m.ident;
        let docs = &m.docs;
        let params = m.args.iter().map(|(i, t)| quote!(#i: #t));
        let names: Vec<&Ident> = m.args.iter().map(|(i, _)| i).collect();
        let types: Vec<&Type> = m.args.iter().map(|(_, t)| t).collect();
        let id_const = &m.id_const;
        let fp_const = &m.fp_const;
        let sep = if m.docs.is_empty() { quote!() } else { doc("") };
        let req = quote!((#(#types,)*));
        let value = quote!((#(#names,)*));
        let (ret, body, note) = match (m.kind, &m.output) {
            (Kind::OneWay, _) => (
                quote!(::core::result::Result<(), #krate::rpc::CallError>),
                quote!(self.inner.send(Self::#id_const, Self::#fp_const, &#value).await),
                format!(
                    "Sends `{}` reliably as a one-way message (command {}); resolves when the \
                     target acknowledged it (no response).",
                    m.name, m.id
                ),
            ),
            (Kind::Unreliable, _) => (
                quote!(::core::result::Result<(), #krate::rpc::CallError>),
                quote!(self.inner.usend(Self::#id_const, Self::#fp_const, &#value).await),
                format!(
                    "Sends `{}` as one unreliable datagram (command {}); it may be lost.",
                    m.name, m.id
                ),
            ),
            (Kind::Request, Output::Value(t)) => (
                quote!(::core::result::Result<#t, #krate::rpc::CallError>),
                quote!(self.inner.call::<#req, #t>(Self::#id_const, Self::#fp_const, &#value).await),
                format!("Calls `{}` (command {}).", m.name, m.id),
            ),
            (Kind::Request, Output::Fallible(t, e)) => (
                quote!(::core::result::Result<#t, #krate::rpc::CallError<#e>>),
                quote!(self.inner.call_fallible::<#req, #t, #e>(Self::#id_const, Self::#fp_const, &#value).await),
                format!(
                    "Calls `{}` (command {}); its own error comes back as `CallError::Remote`.",
                    m.name, m.id
                ),
            ),
        };
        quote! {
            #(#docs)*
            #sep
            #[doc = #note]
            #vis async fn #ident(&self, #(#params),*) -> #ret {
                #body
            }
        }
    });
    let client_doc = format!(
        "A typed client of the mesh service [`{trait_ident}`]: one `async fn` per method, \
         calling one node ([`for_node`](Self::for_node), [`new`](Self::new)) or a node of a type \
         ([`for_type`](Self::for_type), [`random_of_type`](Self::random_of_type)). Cheap to \
         clone."
    );
    let the_client = quote! {
        #[doc = #client_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #[allow(dead_code)]
        #vis struct #client {
            inner: #krate::rpc::Client,
        }

        #[allow(dead_code, clippy::too_many_arguments)]
        impl #client {
            #[doc = "The service's name (listed in node records, part of every fingerprint)."]
            #vis const SERVICE_NAME: &'static str = #service_lit;
            #(#consts)*

            /// Calls `target` through the process's default mesh.
            #vis fn for_node(target: impl ::core::convert::Into<#krate::Target>) -> Self {
                Self { inner: #krate::rpc::Client::for_node(target) }
            }

            /// Calls `target` through `mesh`.
            #vis fn new(mesh: &#krate::Mesh, target: impl ::core::convert::Into<#krate::Target>) -> Self {
                Self { inner: #krate::rpc::Client::new(mesh, target) }
            }

            /// Calls the available nodes of `node_type` that serve each method, round-robin
            /// (through the default mesh unless [`on`](Self::on) gives one).
            #vis fn for_type(node_type: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self { inner: #krate::rpc::Client::for_type(node_type) }
            }

            /// Calls a random available node of `node_type` that serves each method.
            #vis fn random_of_type(node_type: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self { inner: #krate::rpc::Client::random_of_type(node_type) }
            }

            /// Uses `mesh` instead of the default one.
            #vis fn on(self, mesh: &#krate::Mesh) -> Self {
                Self { inner: self.inner.on(mesh) }
            }

            /// Sets the deadline of every call (default: the mesh's `request_timeout`).
            #vis fn with_timeout(self, timeout: ::core::time::Duration) -> Self {
                Self { inner: self.inner.with_timeout(timeout) }
            }

            /// The untyped client underneath.
            #vis fn as_client(&self) -> &#krate::rpc::Client {
                &self.inner
            }

            #(#client_methods)*
        }

        impl ::core::convert::From<#krate::rpc::Client> for #client {
            fn from(inner: #krate::rpc::Client) -> Self {
                Self { inner }
            }
        }
    };

    // ---- broadcast ---------------------------------------------------------------------------
    let broadcast_methods = methods
        .iter()
        .filter(|m| m.kind == Kind::Request)
        .map(|m| {
            let ident = &m.ident;
            let docs = &m.docs;
            let params = m.args.iter().map(|(i, t)| quote!(#i: #t));
            let names: Vec<&Ident> = m.args.iter().map(|(i, _)| i).collect();
            let types: Vec<&Type> = m.args.iter().map(|(_, t)| t).collect();
            let id_const = &m.id_const;
            let fp_const = &m.fp_const;
            let sep = if m.docs.is_empty() { quote!() } else { doc("") };
            let req = quote!((#(#types,)*));
            let value = quote!((#(#names,)*));
            let note = format!(
                "Calls `{}` (command {}) on every target concurrently; one result per target.",
                m.name, m.id
            );
            let (each, body) = match &m.output {
                Output::Value(t) => (
                    quote!(::core::result::Result<#t, #krate::rpc::CallError>),
                    quote!(self.inner.call::<#req, #t>(#client::#id_const, #client::#fp_const, &#value).await),
                ),
                Output::Fallible(t, e) => (
                    quote!(::core::result::Result<#t, #krate::rpc::CallError<#e>>),
                    quote!(self.inner.call_fallible::<#req, #t, #e>(#client::#id_const, #client::#fp_const, &#value).await),
                ),
            };
            quote! {
                #(#docs)*
                #sep
                #[doc = #note]
                #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<
                    ::std::vec::Vec<(#krate::Target, #each)>,
                    #krate::rpc::CallError,
                > {
                    #body
                }
            }
        });
    let broadcast_doc = format!(
        "Calls a method of the mesh service [`{trait_ident}`] on many nodes at once and collects \
         every result: every available node of a type serving the method \
         ([`to_type`](Self::to_type)) or a list ([`to_nodes`](Self::to_nodes)). One-way methods \
         are not included."
    );
    let the_broadcast = quote! {
        #[doc = #broadcast_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #[allow(dead_code)]
        #vis struct #broadcast {
            inner: #krate::rpc::Broadcast,
        }

        #[allow(dead_code, clippy::too_many_arguments, clippy::type_complexity)]
        impl #broadcast {
            /// Every available node of `node_type` serving the method called, through the
            /// default mesh unless [`on`](Self::on) gives one.
            #vis fn to_type(node_type: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self { inner: #krate::rpc::Broadcast::to_type(node_type) }
            }

            /// The given nodes, through the default mesh unless [`on`](Self::on) gives one.
            #vis fn to_nodes<I, T>(targets: I) -> Self
            where
                I: ::core::iter::IntoIterator<Item = T>,
                T: ::core::convert::Into<#krate::Target>,
            {
                Self { inner: #krate::rpc::Broadcast::to_nodes(targets) }
            }

            /// Uses `mesh` instead of the default one.
            #vis fn on(self, mesh: &#krate::Mesh) -> Self {
                Self { inner: self.inner.on(mesh) }
            }

            /// Sets the deadline of each call (default: the mesh's `request_timeout`).
            #vis fn with_timeout(self, timeout: ::core::time::Duration) -> Self {
                Self { inner: self.inner.with_timeout(timeout) }
            }

            /// The untyped broadcast underneath.
            #vis fn as_broadcast(&self) -> &#krate::rpc::Broadcast {
                &self.inner
            }

            #(#broadcast_methods)*
        }

        impl ::core::convert::From<#krate::rpc::Broadcast> for #broadcast {
            fn from(inner: #krate::rpc::Broadcast) -> Self {
                Self { inner }
            }
        }
    };

    // ---- server ------------------------------------------------------------------------------
    let svc = Ident::new("__mesh_svc", Span::mixed_site());
    let ctx = Ident::new("__mesh_ctx", Span::mixed_site());
    let imp = Ident::new("__MeshImpl", Span::call_site());
    let entries = methods.iter().map(|m| {
        let ident = &m.ident;
        let name = LitStr::new(&m.name, m.ident.span());
        let id_const = &m.id_const;
        let fp_const = &m.fp_const;
        let names: Vec<&Ident> = m.args.iter().map(|(i, _)| i).collect();
        let types: Vec<&Type> = m.args.iter().map(|(_, t)| t).collect();
        let ctx_param = if m.has_ctx { quote!(#ctx) } else { quote!(_) };
        let ctx_arg = if m.has_ctx { quote!(#ctx,) } else { quote!() };
        let build = match (&m.output, m.kind) {
            (Output::Fallible(..), Kind::Request) => quote!(#krate::rpc::fallible_handler),
            _ => quote!(#krate::rpc::handler),
        };
        quote! {
            {
                let #svc = ::core::clone::Clone::clone(&self.inner);
                #krate::rpc::Method {
                    id: #client::#id_const,
                    name: #name,
                    fingerprint: #client::#fp_const,
                    handler: #build(
                        move |#ctx_param: #krate::rpc::CallContext, (#(#names,)*): (#(#types,)*)| {
                            let #svc = ::core::clone::Clone::clone(&#svc);
                            async move {
                                <#imp as #trait_ident>::#ident(&*#svc, #ctx_arg #(#names),*).await
                            }
                        },
                    ),
                }
            }
        }
    });
    let server_doc = format!(
        "Serves an implementation of the mesh service [`{trait_ident}`]: pass \
         `{server}::new(implementation)` to `Mesh::serve`. Cheap to clone (shares the \
         implementation)."
    );
    let the_server = quote! {
        #[doc = #server_doc]
        #[allow(dead_code)]
        #vis struct #server<S> {
            inner: ::std::sync::Arc<S>,
        }

        #[allow(dead_code)]
        impl<S: #trait_ident> #server<S> {
            /// Wraps an implementation for `Mesh::serve`.
            #vis fn new(service: S) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }

            /// Wraps an implementation that is shared with other code.
            #vis fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                Self { inner: service }
            }

            /// The implementation.
            #vis fn get_ref(&self) -> &S {
                &self.inner
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<S> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server))
                    .field("service", &#client::SERVICE_NAME)
                    .finish_non_exhaustive()
            }
        }

        impl<#imp: #trait_ident> #krate::rpc::Service for #server<#imp> {
            fn name(&self) -> &'static str {
                #client::SERVICE_NAME
            }

            fn methods(&self) -> ::std::vec::Vec<#krate::rpc::Method> {
                ::std::vec![#(#entries),*]
            }
        }
    };

    quote! {
        #the_trait
        #the_client
        #the_broadcast
        #the_server
    }
}

/// `async fn m(&self, a: A) -> T` becomes `fn m(&self, a: A) -> impl Future<Output = T> + Send`
/// (a default body becomes `async move { body }`).
fn desugar(f: &mut TraitItemFn) {
    let output: Type = match &f.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let span = f
        .sig
        .asyncness
        .map_or_else(|| f.sig.fn_token.span, |a| a.span);
    f.sig.asyncness = None;
    f.sig.output = syn::parse_quote_spanned! {span=>
        -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    };
    match &mut f.default {
        Some(block) => {
            let inner = block.clone();
            *block = syn::parse_quote_spanned! {span=> { async move #inner } };
        }
        None => strip_patterns(&mut f.sig),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
