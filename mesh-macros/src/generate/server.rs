//! `<Trait>Server`: serves an implementation (`impl mesh_core::rpc::Service`).

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Ident, LitStr};

use super::{Names, wire_type};
use crate::analyze::{Kind, MethodInfo, Output};
use crate::types::is_byte_vec;

/// The server type and its `Service` implementation.
pub(super) fn generate(names: &Names, methods: &[MethodInfo]) -> TokenStream2 {
    let Names {
        krate,
        vis,
        trait_ident,
        client,
        server,
        ..
    } = names;
    let svc = Ident::new("__mesh_svc", Span::mixed_site());
    let ctx = Ident::new("__mesh_ctx", Span::mixed_site());
    let imp = Ident::new("__MeshImpl", Span::call_site());
    let entries = methods.iter().map(|m| {
        let ident = &m.ident;
        let name = LitStr::new(&m.name, m.ident.span());
        let id_const = &m.id_const;
        let fp_const = &m.fp_const;
        let arg_names: Vec<&Ident> = m.args.iter().map(|(i, _)| i).collect();
        let types: Vec<TokenStream2> = m.args.iter().map(|(_, t)| wire_type(t, krate)).collect();
        let ctx_param = if m.has_ctx { quote!(#ctx) } else { quote!(_) };
        let ctx_arg = if m.has_ctx { quote!(#ctx,) } else { quote!() };
        let call_args = m.args.iter().map(|(i, t)| {
            if is_byte_vec(t) {
                quote!(#i.into_vec())
            } else {
                quote!(#i)
            }
        });
        let call = quote!(<#imp as #trait_ident>::#ident(&*#svc, #ctx_arg #(#call_args),*).await);
        // A `Vec<u8>` result goes back as bytes.
        let call = match &m.output {
            Output::Value(t) if is_byte_vec(t) => quote!(#krate::codec::ByteVec::from(#call)),
            Output::Fallible(t, _) if is_byte_vec(t) => {
                quote!(#call.map(#krate::codec::ByteVec::from))
            }
            _ => call,
        };
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
                        move |#ctx_param: #krate::rpc::CallContext, (#(#arg_names,)*): (#(#types,)*)| {
                            let #svc = ::core::clone::Clone::clone(&#svc);
                            async move {
                                #call
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
    the_server
}
