//! `#[derive(SharedObject)]` checked: field ids and kinds, bounds, and the names the
//! generated handle would define.

use proc_macro2::Span;
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

/// What kind of shared field a struct field is.
pub enum Kind {
    /// An integer with bounds: writes outside are refused, or clamped.
    Counter {
        /// The lowest value.
        min: i128,
        /// The highest value.
        max: i128,
        /// Whether writes outside are clamped (else refused).
        clamp: bool,
    },
    /// Any other serde value, written whole.
    Value,
    /// A `BTreeMap` or `HashMap`, written by key.
    Map {
        /// The key type.
        key: Box<Type>,
        /// The value type.
        value: Box<Type>,
        /// The most entries it may hold.
        max_len: u32,
    },
}

impl Kind {
    /// The kind's name in manifests: `counter`, `value` or `map`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Counter { .. } => "counter",
            Kind::Value => "value",
            Kind::Map { .. } => "map",
        }
    }
}

/// One field, checked.
pub struct Field {
    /// The field's name as written.
    pub ident: Ident,
    /// Its type as written.
    pub ty: Type,
    /// Its field id (its position unless pinned with `#[shared(id = N)]`).
    pub id: u16,
    /// Its kind.
    pub kind: Kind,
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

/// Checks a `#[derive(SharedObject)]` struct and classifies its fields, reporting every
/// problem to `errors` (the caller emits nothing but errors if any was added).
pub fn analyze_shared(input: &DeriveInput, errors: &mut Errors) -> Vec<Field> {
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
        .filter_map(|(i, f)| classify(f, i, errors))
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
    fields
}
