//! `#[derive(SharedObject)]`: field ids and kinds, the conversion to and from the owner's
//! field states, and the typed handle and batch with one method per field and operation.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Expr, Fields, GenericArgument, Ident, Lit, PathArguments, Type, UnOp,
};

use crate::errors::Errors;

/// Names the handle gets from its inner `ObjectHandle` (through `Deref`) and the batch has:
/// a field whose generated methods would take one is refused.
const RESERVED: &[&str] = &[
    "id",
    "version",
    "epoch",
    "get",
    "read",
    "removed",
    "events",
    "refresh",
    "wait_version",
    "write",
    "raw_batch",
    "remove",
    "batch",
    "commit",
    "push",
    "clone",
    "from",
    "deref",
];

/// The integer types a counter can be, with their ranges.
fn int_range(name: &str) -> Option<(i128, i128)> {
    Some(match name {
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" => (i64::MIN.into(), i64::MAX.into()),
        "isize" => (i64::MIN.into(), i64::MAX.into()),
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" => (0, u64::MAX.into()),
        "usize" => (0, u64::MAX.into()),
        _ => return None,
    })
}

enum Kind {
    Counter {
        min: i128,
        max: i128,
        clamp: bool,
    },
    Value,
    Map {
        key: Box<Type>,
        value: Box<Type>,
        max_len: u32,
    },
}

struct Field {
    ident: Ident,
    ty: Type,
    id: u16,
    kind: Kind,
}

#[derive(Default)]
struct Attrs {
    min: Option<(i128, Span)>,
    max: Option<(i128, Span)>,
    clamp: Option<(bool, Span)>,
    max_len: Option<(u32, Span)>,
    id: Option<(u16, Span)>,
}

fn int_of(e: &Expr) -> Option<i128> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse::<i128>().ok(),
            _ => None,
        },
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => int_of(&u.expr).map(|v| -v),
        Expr::Group(g) => int_of(&g.expr),
        _ => None,
    }
}

fn parse_attrs(field: &syn::Field, errors: &mut Errors) -> Attrs {
    let mut a = Attrs::default();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("shared")) {
        let r = attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let span = meta.path.span();
            match key.as_str() {
                "min" | "max" | "max_len" | "id" => {
                    let e: Expr = meta.value()?.parse()?;
                    let Some(v) = int_of(&e) else {
                        return Err(syn::Error::new(e.span(), format!("`{key}` takes an integer")));
                    };
                    let range = |lo: i128, hi: i128| {
                        if v < lo || v > hi {
                            Err(syn::Error::new(
                                e.span(),
                                format!("`{key}` must be between {lo} and {hi}"),
                            ))
                        } else {
                            Ok(())
                        }
                    };
                    match key.as_str() {
                        "min" => a.min = Some((v, span)),
                        "max" => a.max = Some((v, span)),
                        "max_len" => {
                            range(1, u32::MAX.into())?;
                            a.max_len = Some((v as u32, span));
                        }
                        _ => {
                            range(0, u16::MAX.into())?;
                            a.id = Some((v as u16, span));
                        }
                    }
                }
                "on_bound" => {
                    let e: Ident = meta.value()?.parse()?;
                    let clamp = match e.to_string().as_str() {
                        "clamp" => true,
                        "reject" => false,
                        _ => {
                            return Err(syn::Error::new(
                                e.span(),
                                "`on_bound` is `reject` (the default) or `clamp`",
                            ));
                        }
                    };
                    a.clamp = Some((clamp, span));
                }
                _ => {
                    return Err(meta.error(
                        "unknown shared option: expected `min`, `max`, `on_bound`, `max_len` or `id`",
                    ));
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            errors.push(e);
        }
    }
    a
}

/// The last path segment's name and generic type arguments of a plain path type.
fn path_of(ty: &Type) -> Option<(String, Vec<Type>)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let seg = p.path.segments.last()?;
    let args = match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((seg.ident.to_string(), args))
}

/// Why a field type cannot be shared, if it cannot.
fn unsupported(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Reference(_) => {
            Some("a reference cannot be shared: use an owned type (`String`, not `&str`)")
        }
        Type::Ptr(_) => Some("a raw pointer cannot be shared"),
        Type::BareFn(_) => Some("a function pointer cannot be shared"),
        Type::TraitObject(_) | Type::ImplTrait(_) => {
            Some("a trait object cannot be shared: use a concrete serde type")
        }
        Type::Never(_) | Type::Infer(_) | Type::Macro(_) => Some("this type cannot be shared"),
        Type::Paren(p) => unsupported(&p.elem),
        Type::Group(g) => unsupported(&g.elem),
        _ => None,
    }
}

fn classify(f: &syn::Field, pos: usize, errors: &mut Errors) -> Option<Field> {
    let ident = f.ident.clone()?;
    let a = parse_attrs(f, errors);
    if let Some(why) = unsupported(&f.ty) {
        errors.spanned(
            &f.ty,
            format!("unsupported field type for a shared object: {why}"),
        );
        return None;
    }
    let path = path_of(&f.ty);
    let name = path.as_ref().map(|(n, _)| n.as_str()).unwrap_or("");
    let ty_text = quote!(#f.ty).to_string();
    let _ = ty_text;
    let id = match a.id {
        Some((id, _)) => id,
        None => match u16::try_from(pos) {
            Ok(id) => id,
            Err(_) => {
                errors.spanned(&ident, "too many fields");
                return None;
            }
        },
    };
    let kind = if let Some((lo, hi)) = int_range(name) {
        if let Some((_, s)) = a.max_len {
            errors.at(s, "`max_len` applies to map fields (BTreeMap, HashMap)");
        }
        let min = a.min.map_or(lo, |(v, _)| v);
        let max = a.max.map_or(hi, |(v, _)| v);
        for (bound, v) in [(a.min, min), (a.max, max)] {
            if let Some((_, s)) = bound
                && (v < lo || v > hi)
            {
                errors.at(
                    s,
                    format!("bound {v} is outside the range of `{name}` ({lo}..={hi})"),
                );
            }
        }
        if min > max {
            let s = a.min.map_or(ident.span(), |(_, s)| s);
            errors.at(s, format!("`min` ({min}) is greater than `max` ({max})"));
        }
        Kind::Counter {
            min,
            max,
            clamp: a.clamp.is_some_and(|(c, _)| c),
        }
    } else {
        for (what, s) in [
            ("min", a.min.map(|(_, s)| s)),
            ("max", a.max.map(|(_, s)| s)),
            ("on_bound", a.clamp.map(|(_, s)| s)),
        ] {
            if let Some(s) = s {
                errors.at(
                    s,
                    format!(
                        "`{what}` applies to integer fields (i8..i64, u8..u64, isize, usize); `{ident}` is not one"
                    ),
                );
            }
        }
        match (name, path.as_ref().map(|(_, a)| a.as_slice())) {
            ("BTreeMap" | "HashMap", Some([k, v, ..])) => Kind::Map {
                key: Box::new(k.clone()),
                value: Box::new(v.clone()),
                max_len: a.max_len.map_or(u32::MAX, |(v, _)| v),
            },
            _ => {
                if let Some((_, s)) = a.max_len {
                    errors.at(s, "`max_len` applies to map fields (BTreeMap, HashMap)");
                }
                Kind::Value
            }
        }
    };
    Some(Field {
        ident,
        ty: f.ty.clone(),
        id,
        kind,
    })
}

/// The method names a field generates.
fn method_names(f: &Field) -> Vec<String> {
    let n = f.ident.to_string();
    let n = n.strip_prefix("r#").unwrap_or(&n).to_string();
    match f.kind {
        Kind::Counter { .. } => vec![
            n.clone(),
            format!("inc_{n}"),
            format!("set_{n}"),
            format!("cas_{n}"),
        ],
        Kind::Value => vec![n.clone(), format!("set_{n}"), format!("cas_{n}")],
        Kind::Map { .. } => vec![n.clone(), format!("{n}_put"), format!("{n}_delete")],
    }
}

/// The whole derive.
pub(crate) fn derive(input: TokenStream2) -> TokenStream2 {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    let krate: syn::Path = syn::parse_quote!(::mesh_core);
    if !input.generics.params.is_empty() {
        errors.spanned(
            &input.generics,
            "#[derive(SharedObject)] does not support generic structs: the owner checks the type by name and fields; declare a concrete struct",
        );
    }
    let named = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(n) => Some(n.named.iter().collect::<Vec<_>>()),
            _ => {
                errors.spanned(
                    &s.fields,
                    "#[derive(SharedObject)] needs named fields (each field is written by name)",
                );
                None
            }
        },
        Data::Enum(e) => {
            errors.at(
                e.enum_token.span,
                "#[derive(SharedObject)] goes on a struct with named fields, not an enum",
            );
            None
        }
        Data::Union(u) => {
            errors.at(
                u.union_token.span,
                "#[derive(SharedObject)] goes on a struct with named fields, not a union",
            );
            None
        }
    };
    let fields: Vec<Field> = named
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| classify(f, i, &mut errors))
        .collect();
    // Ids and generated names must be unique.
    let mut seen_ids: Vec<(u16, &Ident)> = Vec::new();
    let mut seen_names: Vec<(String, &Ident)> = Vec::new();
    for f in &fields {
        if let Some((_, other)) = seen_ids.iter().find(|(id, _)| *id == f.id) {
            errors.spanned(
                &f.ident,
                format!("field id {} is already used by `{other}`", f.id),
            );
        }
        seen_ids.push((f.id, &f.ident));
        for m in method_names(f) {
            if RESERVED.contains(&m.as_str()) {
                errors.spanned(
                    &f.ident,
                    format!("field `{}` would generate `{m}`, which the handle already has; rename the field", f.ident),
                );
            } else if let Some((_, other)) = seen_names.iter().find(|(n, _)| *n == m) {
                errors.spanned(
                    &f.ident,
                    format!("field `{}` would generate `{m}`, which field `{other}` generates too; rename one of them", f.ident),
                );
            }
            seen_names.push((m, &f.ident));
        }
    }
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
