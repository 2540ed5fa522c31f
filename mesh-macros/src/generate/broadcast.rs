//! `<Trait>Broadcast`: a method on many nodes at once.

use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

use super::{MethodParts, Names, wire_type};
use crate::analyze::{Kind, MethodInfo, Output};
use crate::types::is_byte_vec;

/// The broadcast type with one `async fn` per method.
pub(super) fn generate(names: &Names, methods: &[MethodInfo]) -> TokenStream2 {
    let Names {
        krate,
        vis,
        trait_ident,
        client,
        broadcast,
        ..
    } = names;
    let broadcast_methods = methods.iter().map(|m| {
        let (id_const, fp_const) = (&m.id_const, &m.fp_const);
        let parts = MethodParts::new(m, krate);
        let cmd =
            quote!(#krate::rpc::Command::new(#client::#id_const).with_fingerprint(#client::#fp_const));
        // A `Vec<u8>` result travels as bytes: each target's result turned back into a vector.
        let unwrap_bytes = |t: &syn::Type| {
            if is_byte_vec(t) {
                quote!(.map(|all| all.into_iter().map(|(t, r)| (t, r.map(#krate::codec::ByteVec::into_vec))).collect()))
            } else {
                quote!()
            }
        };
        let (req, value) = (&parts.req, &parts.value);
        let (ret, body, note) = match (m.kind, &m.output) {
            (Kind::OneWay, _) => (
                quote!(::core::result::Result<(), #krate::rpc::CallError>),
                quote!(self.inner.send(#cmd, &#value).await),
                format!(
                    "Sends `{}` (command {}) reliably to every target through a relay tree \
                     (see [`with_limit`](Self::with_limit)), encoded once; resolves when the \
                     first hops acknowledged it (no responses). A node whose `{}` has another \
                     signature drops its copy as incompatible and still forwards the rest.",
                    m.name, m.id, m.name
                ),
            ),
            (Kind::Unreliable, _) => (
                quote!(::core::result::Result<(), #krate::rpc::CallError>),
                quote!(self.inner.usend(#cmd, &#value).await),
                format!(
                    "Sends `{}` (command {}) to every target through a relay tree of \
                     unreliable datagrams (see [`with_limit`](Self::with_limit)), encoded once; \
                     a lost datagram loses its hop's share too.",
                    m.name, m.id
                ),
            ),
            (Kind::Request, Output::Value(t)) => (
                quote!(::core::result::Result<
                    ::std::vec::Vec<(#krate::Target, ::core::result::Result<#t, #krate::rpc::CallError>)>,
                    #krate::rpc::CallError,
                >),
                {
                    let (wire, back) = (wire_type(t, krate), unwrap_bytes(t));
                    quote!(self.inner.call::<#req, #wire>(#cmd, &#value).await #back)
                },
                format!(
                    "Calls `{}` (command {}) on every target concurrently; one result per target.",
                    m.name, m.id
                ),
            ),
            (Kind::Request, Output::Fallible(t, e)) => (
                quote!(::core::result::Result<
                    ::std::vec::Vec<(#krate::Target, ::core::result::Result<#t, #krate::rpc::CallError<#e>>)>,
                    #krate::rpc::CallError,
                >),
                {
                    let (wire, back) = (wire_type(t, krate), unwrap_bytes(t));
                    quote!(self.inner.call_fallible::<#req, #wire, #e>(#cmd, &#value).await #back)
                },
                format!(
                    "Calls `{}` (command {}) on every target concurrently; one result per target.",
                    m.name, m.id
                ),
            ),
        };
        parts.emit(m, vis, ret, body, note)
    });
    let broadcast_doc = format!(
        "Calls a method of the mesh service [`{trait_ident}`] on many nodes at once: every \
         available node of a type serving the method ([`to_type`](Self::to_type)) or a list \
         ([`to_nodes`](Self::to_nodes)). A request method collects every result; a one-way \
         method is sent once through a relay tree ([`with_limit`](Self::with_limit))."
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
            #vis fn on(self, mesh: &impl #krate::rpc::Via) -> Self {
                Self { inner: self.inner.on(mesh) }
            }

            /// Sets the deadline of each call of a request method (default: the mesh's
            /// `request_timeout`).
            #vis fn with_timeout(self, timeout: ::core::time::Duration) -> Self {
                Self { inner: self.inner.with_timeout(timeout) }
            }

            /// Sets the relay limit of one-way methods: this node sends to at most `limit`
            /// targets and each of them forwards to at most `limit` more. The default (and
            /// `0`) is the mesh's `relay_limit`, 2 unless configured; `1` makes a chain, a
            /// limit at least the number of targets sends to each directly.
            #vis fn with_limit(self, limit: usize) -> Self {
                Self { inner: self.inner.with_limit(limit) }
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
    the_broadcast
}
