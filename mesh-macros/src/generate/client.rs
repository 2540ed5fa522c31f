//! `<Trait>Client`: one node, balanced or random; and the id and fingerprint constants.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::LitStr;

use super::{MethodParts, Names};
use crate::analyze::{Kind, MethodInfo, Output};
use crate::types::is_byte_vec;

/// The client type with its constants and one `async fn` per method.
pub(super) fn generate(names: &Names, methods: &[MethodInfo]) -> TokenStream2 {
    let Names {
        krate,
        vis,
        trait_ident,
        client,
        service,
        ..
    } = names;
    let service_lit = LitStr::new(service, Span::call_site());
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

    // The client type.
    let client_methods = methods.iter().map(|m| {
        let parts = MethodParts::new(m, krate);
        let (id_const, fp_const) = (&m.id_const, &m.fp_const);
        let (req, value) = (&parts.req, &parts.value);
        let cmd =
            quote!(#krate::rpc::Command::new(Self::#id_const).with_fingerprint(Self::#fp_const));
        let (ret, body, note) = match (m.kind, &m.output) {
            (Kind::OneWay, _) => (
                quote!(::core::result::Result<(), #krate::rpc::CallError>),
                quote!(self.inner.send(#cmd, &#value).await),
                format!(
                    "Sends `{}` reliably as a one-way message (command {}); resolves when the \
                     target acknowledged it (no response), or fails with `Timeout` at the \
                     client's deadline.",
                    m.name, m.id
                ),
            ),
            (Kind::Unreliable, _) => (
                quote!(::core::result::Result<(), #krate::rpc::CallError>),
                quote!(self.inner.usend(#cmd, &#value).await),
                format!(
                    "Sends `{}` as one unreliable datagram (command {}); it may be lost.",
                    m.name, m.id
                ),
            ),
            (Kind::Request, Output::Value(t)) => (
                quote!(::core::result::Result<#t, #krate::rpc::CallError>),
                if is_byte_vec(t) {
                    quote!(self.inner.call::<#req, #krate::codec::ByteVec>(#cmd, &#value).await
                        .map(#krate::codec::ByteVec::into_vec))
                } else {
                    quote!(self.inner.call::<#req, #t>(#cmd, &#value).await)
                },
                format!("Calls `{}` (command {}).", m.name, m.id),
            ),
            (Kind::Request, Output::Fallible(t, e)) => (
                quote!(::core::result::Result<#t, #krate::rpc::CallError<#e>>),
                if is_byte_vec(t) {
                    quote!(self.inner.call_fallible::<#req, #krate::codec::ByteVec, #e>(#cmd, &#value)
                        .await.map(#krate::codec::ByteVec::into_vec))
                } else {
                    quote!(self.inner.call_fallible::<#req, #t, #e>(#cmd, &#value).await)
                },
                format!(
                    "Calls `{}` (command {}); its own error comes back as `CallError::Remote`.",
                    m.name, m.id
                ),
            ),
        };
        parts.emit(m, vis, ret, body, note)
    });
    let client_doc = format!(
        "A typed client of the mesh service [`{trait_ident}`]: one `async fn` per method, \
         calling one node ([`for_node`](Self::for_node)) or a node of a type \
         ([`for_type`](Self::for_type), [`random_of_type`](Self::random_of_type)), through the \
         process's default mesh or the one given with [`on`](Self::on). Cheap to clone."
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

            /// Calls one node (a node id, an address, `"host:port"` or a record).
            #vis fn for_node(target: impl ::core::convert::Into<#krate::Target>) -> Self {
                Self { inner: #krate::rpc::Client::for_node(target) }
            }

            /// Calls the available nodes of `node_type` that serve each method, round-robin.
            #vis fn for_type(node_type: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self { inner: #krate::rpc::Client::for_type(node_type) }
            }

            /// Calls a random available node of `node_type` that serves each method.
            #vis fn random_of_type(node_type: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self { inner: #krate::rpc::Client::random_of_type(node_type) }
            }

            /// Goes through `mesh` instead of the process's default mesh.
            #vis fn on(self, mesh: &impl #krate::rpc::Via) -> Self {
                Self { inner: self.inner.on(mesh) }
            }

            /// Sets the deadline of every call (default: the mesh's `request_timeout`; inside a
            /// handler, never past the caller's own deadline).
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
    the_client
}
