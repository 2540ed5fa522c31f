//! Code generation for a service that passed the checks: the rewritten trait, the client
//! (with the id and fingerprint constants), the broadcast handle and the server.

mod broadcast;
mod client;
mod server;
mod service_trait;

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{Ident, ItemTrait, Path, Visibility};

use crate::analyze::{Kind, MethodInfo, Output};
use crate::args::ServiceArgs;

pub(crate) use service_trait::sanitize_trait;

/// The names and paths every generated piece uses.
pub(crate) struct Names {
    /// The path of mesh-core.
    pub(crate) krate: Path,
    /// The trait's visibility, given to every generated item.
    pub(crate) vis: Visibility,
    /// The trait's name as written.
    pub(crate) trait_ident: Ident,
    /// `<Trait>Client`.
    pub(crate) client: Ident,
    /// `<Trait>Broadcast`.
    pub(crate) broadcast: Ident,
    /// `<Trait>Server`.
    pub(crate) server: Ident,
    /// The service name (part of every fingerprint).
    pub(crate) service: String,
    /// The base command id.
    pub(crate) base: u16,
}

impl Names {
    fn new(item: &ItemTrait, args: &ServiceArgs) -> Names {
        let trait_ident = item.ident.clone();
        let bare = trait_ident.unraw();
        Names {
            krate: args.krate.clone(),
            vis: item.vis.clone(),
            client: format_ident!("{}Client", bare, span = trait_ident.span()),
            broadcast: format_ident!("{}Broadcast", bare, span = trait_ident.span()),
            server: format_ident!("{}Server", bare, span = trait_ident.span()),
            service: args.name.clone().unwrap_or_else(|| bare.to_string()),
            base: args.id.unwrap_or_default(),
            trait_ident,
        }
    }
}

/// Everything `#[mesh_service]` emits for a trait without errors.
pub(crate) fn generate(
    item: ItemTrait,
    args: &ServiceArgs,
    methods: &[MethodInfo],
) -> TokenStream2 {
    let names = Names::new(&item, args);
    let the_trait = service_trait::generate(item, &names, methods);
    let the_client = client::generate(&names, methods);
    let the_broadcast = broadcast::generate(&names, methods);
    let the_server = server::generate(&names, methods);
    quote! {
        #the_trait
        #the_client
        #the_broadcast
        #the_server
    }
}

/// `#[doc = text]`.
pub(crate) fn doc(text: impl AsRef<str>) -> TokenStream2 {
    let text = text.as_ref();
    quote!(#[doc = #text])
}

/// How a method is delivered, for the generated docs.
pub(crate) fn kind_text(m: &MethodInfo) -> &'static str {
    match (m.kind, &m.output) {
        (Kind::OneWay, _) => "one-way",
        (Kind::Unreliable, _) => "unreliable one-way",
        (Kind::Request, Output::Fallible(..)) => "request (fallible)",
        (Kind::Request, Output::Value(_)) => "request",
    }
}
