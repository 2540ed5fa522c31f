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
    let schemas = methods.iter().map(|m| schema(m, names, &svc, &ctx, &imp));
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

            fn schema(&self) -> ::std::vec::Vec<#krate::rpc::MethodSchema> {
                ::std::vec![#(#schemas),*]
            }
        }
    };
    the_server
}

/// What a method says about itself for reflection (its kind, argument and return types as
/// written, signature text), with its JSON entry point: the arguments deserialized from
/// JSON as the types written in the trait, the result serialized to JSON.
fn schema(m: &MethodInfo, names: &Names, svc: &Ident, ctx: &Ident, imp: &Ident) -> TokenStream2 {
    let Names {
        krate,
        trait_ident,
        client,
        ..
    } = names;
    let ident = &m.ident;
    let id_const = &m.id_const;
    let kind = match m.kind {
        Kind::Request => quote!(#krate::rpc::MethodKind::Request),
        Kind::OneWay => quote!(#krate::rpc::MethodKind::Oneway),
        Kind::Unreliable => quote!(#krate::rpc::MethodKind::Unreliable),
    };
    let args = m.args.iter().map(|(i, t)| {
        let name = LitStr::new(&i.to_string(), Span::call_site());
        let ty = LitStr::new(&shown_type(t), Span::call_site());
        quote!(.arg(#name, #ty))
    });
    let (output, error) = match &m.output {
        Output::Value(t) => (shown_type(t), None),
        Output::Fallible(t, e) => (shown_type(t), Some(shown_type(e))),
    };
    let output = LitStr::new(&output, Span::call_site());
    let error = error.map(|e| {
        let e = LitStr::new(&e, Span::call_site());
        quote!(.error(#e))
    });
    let signature = LitStr::new(&m.signature_text, Span::call_site());
    let arg_names: Vec<&Ident> = m.args.iter().map(|(i, _)| i).collect();
    let types: Vec<&syn::Type> = m.args.iter().map(|(_, t)| t).collect();
    let ctx_param = if m.has_ctx { quote!(#ctx) } else { quote!(_) };
    let ctx_arg = if m.has_ctx { quote!(#ctx,) } else { quote!() };
    let build = match (&m.output, m.kind) {
        (Output::Fallible(..), Kind::Request) => quote!(#krate::rpc::json_fallible_handler),
        _ => quote!(#krate::rpc::json_handler),
    };
    quote! {
        {
            let #svc = ::core::clone::Clone::clone(&self.inner);
            #krate::rpc::MethodSchema::new(#client::#id_const, #kind)
                #(#args)*
                .output(#output)
                #error
                .signature(#signature)
                .json(#build(
                    move |#ctx_param: #krate::rpc::CallContext, (#(#arg_names,)*): (#(#types,)*)| {
                        let #svc = ::core::clone::Clone::clone(&#svc);
                        async move {
                            <#imp as #trait_ident>::#ident(&*#svc, #ctx_arg #(#arg_names),*).await
                        }
                    },
                ))
        }
    }
}

/// A type as written, for people: the tokens with spaces only between words and after
/// commas (`HashMap<String, u32>`, `&'static str`, `(i32, i32)`).
fn shown_type(ty: &syn::Type) -> String {
    let text = quote!(#ty).to_string();
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && out.chars().last().is_some_and(word) && word(c) {
            out.push(' ');
        }
        space = false;
        out.push(c);
        if c == ',' {
            out.push(' ');
        }
    }
    out.replace(", >", ">")
        .replace(", )", ")")
        .replace(", ]", "]")
}
