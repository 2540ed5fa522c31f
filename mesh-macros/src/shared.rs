//! `#[derive(SharedObject)]`: the conversion to and from the owner's field states, and the
//! typed handle and batch with one method per field and operation (the checks are in
//! `mesh_syntax::shared_object`).

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::{DeriveInput, Ident};

use mesh_syntax::errors::Errors;
use mesh_syntax::shared_object::{Field, Kind, analyze_shared};

/// The whole derive.
pub(crate) fn derive(input: TokenStream2) -> TokenStream2 {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    let krate: syn::Path = syn::parse_quote!(::mesh_core);
    let fields = analyze_shared(&input, &mut errors);
    if let Some(e) = errors.into_error() {
        return e.to_compile_error();
    }
    generate(&input, &krate, &fields)
}

fn generate(input: &DeriveInput, krate: &syn::Path, fields: &[Field]) -> TokenStream2 {
    let name = &input.ident;
    let vis = &input.vis;
    let type_name = name.to_string();
    let handle = format_ident!("{}Handle", name);
    let batch = format_ident!("{}Batch", name);
    let p = quote!(#krate::shared::__private);
    let mut defs = Vec::new();
    let mut to = Vec::new();
    let mut from = Vec::new();
    let mut apply = Vec::new();
    let mut handle_methods = Vec::new();
    let mut batch_methods = Vec::new();
    for (pos, f) in fields.iter().enumerate() {
        let id = f.id;
        let ident = &f.ident;
        let ty = &f.ty;
        let bare = ident.to_string();
        let bare = bare.strip_prefix("r#").unwrap_or(&bare).to_string();
        let fname = bare.clone();
        let m = |fmt: &str| Ident::new(&fmt.replace("{}", &bare), ident.span());
        let doc_get = format!("`{bare}` as this node's replica holds it (no I/O).");
        match &f.kind {
            Kind::Counter { min, max, clamp } => {
                defs.push(quote!(#p::FieldDef { id: #id, name: #fname, kind: #p::FieldKind::Counter { min: #min, max: #max, clamp: #clamp } }));
                to.push(quote!(#p::counter(self.#ident)));
                from.push(quote!(#ident: #p::from_counter(f, #pos)?));
                apply.push(quote!(#id => #p::apply_counter(&mut self.#ident, e)));
                let (inc, set, cas) = (m("inc_{}"), m("set_{}"), m("cas_{}"));
                let bounds = format!(
                    "within {min}..={max}{}",
                    if *clamp {
                        ", clamped"
                    } else {
                        ", refused outside"
                    }
                );
                let d_inc = format!(
                    "Adds `by` to `{bare}` ({bounds}); resolves with the version the owner gave the write."
                );
                let d_set = format!("Sets `{bare}` ({bounds}).");
                let d_cas = format!("Sets `{bare}` to `new` if it is `expected` at the owner.");
                handle_methods.push(quote! {
                    #[doc = #doc_get]
                    pub fn #ident(&self) -> #ty { self.0.read(|s| s.#ident) }
                    #[doc = #d_inc]
                    pub async fn #inc(&self, by: i64) -> ::core::result::Result<u64, #p::SharedError> {
                        #p::write1(&self.0, #p::op_inc(#id, by)).await
                    }
                    #[doc = #d_set]
                    pub async fn #set(&self, value: #ty) -> ::core::result::Result<u64, #p::SharedError> {
                        #p::write1(&self.0, #p::op_set_counter(#id, value)).await
                    }
                    #[doc = #d_cas]
                    pub async fn #cas(&self, expected: #ty, new: #ty) -> ::core::result::Result<u64, #p::SharedError> {
                        #p::write1(&self.0, #p::op_cas_counter(#id, expected, new)).await
                    }
                });
                batch_methods.push(quote! {
                    #[doc = #d_inc]
                    pub fn #inc(mut self, by: i64) -> Self { self.0.push(#p::op_inc(#id, by)); self }
                    #[doc = #d_set]
                    pub fn #set(mut self, value: #ty) -> Self { self.0.push(#p::op_set_counter(#id, value)); self }
                    #[doc = #d_cas]
                    pub fn #cas(mut self, expected: #ty, new: #ty) -> Self { self.0.push(#p::op_cas_counter(#id, expected, new)); self }
                });
            }
            Kind::Value => {
                defs.push(
                    quote!(#p::FieldDef { id: #id, name: #fname, kind: #p::FieldKind::Value }),
                );
                to.push(quote!(#p::value(&self.#ident)?));
                from.push(quote!(#ident: #p::from_value(f, #pos)?));
                apply.push(quote!(#id => #p::apply_value(&mut self.#ident, e)));
                let (set, cas) = (m("set_{}"), m("cas_{}"));
                let d_set =
                    format!("Sets `{bare}`; resolves with the version the owner gave the write.");
                let d_cas = format!("Sets `{bare}` to `new` if it equals `expected` at the owner.");
                handle_methods.push(quote! {
                    #[doc = #doc_get]
                    pub fn #ident(&self) -> #ty { self.0.read(|s| ::core::clone::Clone::clone(&s.#ident)) }
                    #[doc = #d_set]
                    pub async fn #set(&self, value: #ty) -> ::core::result::Result<u64, #p::SharedError> {
                        #p::write1(&self.0, #p::op_set(self.0.id(), #id, &value)).await
                    }
                    #[doc = #d_cas]
                    pub async fn #cas<Q>(&self, expected: &Q, new: #ty) -> ::core::result::Result<u64, #p::SharedError>
                    where
                        Q: #p::Serialize + ?Sized,
                        #ty: ::core::borrow::Borrow<Q>,
                    {
                        #p::write1(&self.0, #p::op_cas(self.0.id(), #id, expected, &new)).await
                    }
                });
                batch_methods.push(quote! {
                    #[doc = #d_set]
                    pub fn #set(mut self, value: #ty) -> Self { let op = #p::op_set(self.0.id(), #id, &value); self.0.push(op); self }
                    #[doc = #d_cas]
                    pub fn #cas<Q>(mut self, expected: &Q, new: #ty) -> Self
                    where
                        Q: #p::Serialize + ?Sized,
                        #ty: ::core::borrow::Borrow<Q>,
                    {
                        let op = #p::op_cas(self.0.id(), #id, expected, &new);
                        self.0.push(op);
                        self
                    }
                });
            }
            Kind::Map {
                key,
                value,
                max_len,
            } => {
                defs.push(quote!(#p::FieldDef { id: #id, name: #fname, kind: #p::FieldKind::Map { max_len: #max_len } }));
                to.push(quote!(#p::map::<#key, #value, #ty>(&self.#ident)?));
                from.push(quote!(#ident: #p::from_map::<#key, #value, #ty>(f, #pos)?));
                apply.push(quote!(#id => #p::apply_map::<#key, #value, #ty>(&mut self.#ident, e)));
                let (put, del) = (m("{}_put"), m("{}_delete"));
                let d_put = format!("Inserts or replaces an entry of `{bare}`.");
                let d_del =
                    format!("Removes an entry of `{bare}` (absent: no change, still a write).");
                handle_methods.push(quote! {
                    #[doc = #doc_get]
                    pub fn #ident(&self) -> #ty { self.0.read(|s| ::core::clone::Clone::clone(&s.#ident)) }
                    #[doc = #d_put]
                    pub async fn #put(&self, key: #key, value: #value) -> ::core::result::Result<u64, #p::SharedError> {
                        #p::write1(&self.0, #p::op_put(self.0.id(), #id, &key, &value)).await
                    }
                    #[doc = #d_del]
                    pub async fn #del<Q>(&self, key: &Q) -> ::core::result::Result<u64, #p::SharedError>
                    where
                        Q: #p::Serialize + ?Sized,
                        #key: ::core::borrow::Borrow<Q>,
                    {
                        #p::write1(&self.0, #p::op_delete(self.0.id(), #id, key)).await
                    }
                });
                batch_methods.push(quote! {
                    #[doc = #d_put]
                    pub fn #put(mut self, key: #key, value: #value) -> Self { let op = #p::op_put(self.0.id(), #id, &key, &value); self.0.push(op); self }
                    #[doc = #d_del]
                    pub fn #del<Q>(mut self, key: &Q) -> Self
                    where
                        Q: #p::Serialize + ?Sized,
                        #key: ::core::borrow::Borrow<Q>,
                    {
                        let op = #p::op_delete(self.0.id(), #id, key);
                        self.0.push(op);
                        self
                    }
                });
            }
        }
    }
    let handle_doc = format!(
        "A handle on a shared `{name}` (made by `#[derive(SharedObject)]`): reads of this node's replica, writes ordered by the owner. Derefs to [`ObjectHandle`]({krate}::shared::ObjectHandle) for `id`, `events`, `refresh`, `wait_version`, `remove`.",
        krate = quote!(#krate).to_string().replace(' ', "")
    );
    let batch_doc = format!(
        "Writes on a shared `{name}` committed as one (`handle.batch()....commit().await`)."
    );
    quote! {
        const _: () = {
            impl #p::SharedObject for #name {
                type Handle = #handle;
                const TYPE_NAME: &'static str = #type_name;
                const FIELDS: &'static [#p::FieldDef] = &[#(#defs),*];
                fn to_fields(&self) -> ::core::result::Result<::std::vec::Vec<#p::FieldState>, #p::CodecError> {
                    ::core::result::Result::Ok(::std::vec![#(#to),*])
                }
                fn from_fields(f: &[#p::FieldState]) -> ::core::result::Result<Self, #p::CodecError> {
                    ::core::result::Result::Ok(#name { #(#from),* })
                }
                fn apply_effect(&mut self, e: &#p::Effect) -> ::core::result::Result<(), #p::CodecError> {
                    match e.field() {
                        #(#apply,)*
                        _ => ::core::result::Result::Err(#p::unknown_field(e)),
                    }
                }
            }
        };

        #[doc = #handle_doc]
        #[derive(Clone, Debug)]
        #vis struct #handle(#p::ObjectHandle<#name>);

        impl ::core::convert::From<#p::ObjectHandle<#name>> for #handle {
            fn from(h: #p::ObjectHandle<#name>) -> Self { #handle(h) }
        }

        impl ::core::ops::Deref for #handle {
            type Target = #p::ObjectHandle<#name>;
            fn deref(&self) -> &Self::Target { &self.0 }
        }

        impl #handle {
            #(#handle_methods)*

            /// Collects writes to commit atomically.
            pub fn batch(&self) -> #batch { #batch(self.0.raw_batch()) }
        }

        #[doc = #batch_doc]
        #[derive(Debug)]
        #[must_use = "nothing is written until `commit().await`"]
        #vis struct #batch(#p::Batch<#name>);

        impl #batch {
            #(#batch_methods)*

            /// Orders every write of the batch at the owner, all or none.
            pub async fn commit(self) -> ::core::result::Result<u64, #p::SharedError> { self.0.commit().await }
        }
    }
}
