//! Code generation for a service that passed the checks: the rewritten trait, the client
//! (with the id and fingerprint constants), the broadcast handle and the server.

mod broadcast;
mod client;
mod server;
mod service_trait;

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{Ident, ItemTrait, Path, Type, Visibility};

use crate::analyze::{Kind, MethodInfo, Output};
use crate::args::ServiceArgs;
use crate::types::is_byte_vec;

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

/// The pieces of a method the client and the broadcast handle both generate from.
pub(crate) struct MethodParts {
    /// `name: Type` for each argument.
    pub(crate) params: Vec<TokenStream2>,
    /// The argument tuple's type, `(A, B,)`.
    pub(crate) req: TokenStream2,
    /// The argument tuple, `(a, b,)`.
    pub(crate) value: TokenStream2,
}

impl MethodParts {
    pub(crate) fn new(m: &MethodInfo, krate: &Path) -> MethodParts {
        let types = m.args.iter().map(|(_, t)| wire_type(t, krate));
        let values = m.args.iter().map(|(i, t)| {
            if is_byte_vec(t) {
                quote!(#krate::codec::ByteVec::from(#i))
            } else {
                quote!(#i)
            }
        });
        MethodParts {
            params: m.args.iter().map(|(i, t)| quote!(#i: #t)).collect(),
            req: quote!((#(#types,)*)),
            value: quote!((#(#values,)*)),
        }
    }

    /// `async fn name(&self, params) -> ret { body }` with the method's own docs, then `note`.
    pub(crate) fn emit(
        &self,
        m: &MethodInfo,
        vis: &Visibility,
        ret: TokenStream2,
        body: TokenStream2,
        note: String,
    ) -> TokenStream2 {
        let ident = &m.ident;
        let docs = &m.docs;
        let params = &self.params;
        let sep = if m.docs.is_empty() { quote!() } else { doc("") };
        quote! {
            #(#docs)*
            #sep
            #[doc = #note]
            #vis async fn #ident(&self, #(#params),*) -> #ret {
                #body
            }
        }
    }
}

/// The type a value of `ty` crosses the network as: `Vec<u8>` as bytes (the same encoding,
/// decoded in one copy instead of byte by byte), anything else as itself.
pub(crate) fn wire_type(ty: &Type, krate: &Path) -> TokenStream2 {
    if is_byte_vec(ty) {
        quote!(#krate::codec::ByteVec)
    } else {
        quote!(#ty)
    }
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
