//! Checks and helpers on the types of a method's arguments and return value.

use quote::ToTokens;
use syn::visit::Visit;
use syn::{GenericArgument, PathArguments, Type};

use crate::errors::Errors;

/// Rejects what cannot cross the network or be named by the generated code.
pub fn check_type(ty: &Type, what: &'static str, errors: &mut Errors) {
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
pub fn is_call_context(ty: &Type) -> bool {
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

/// `()` (possibly in parentheses).
pub fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(t) => t.elems.is_empty(),
        Type::Paren(p) => is_unit(&p.elem),
        Type::Group(g) => is_unit(&g.elem),
        _ => false,
    }
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments): `(T, E)`.
pub fn fallible(ty: &Type) -> Option<(Type, Type)> {
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
pub fn type_text(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// `Vec<u8>` (as `Vec`, `vec::Vec`, `std::vec::Vec` or `alloc::vec::Vec`, with `u8` written
/// as `u8` or `core::primitive::u8`): carried as bytes by the generated code.
pub fn is_byte_vec(ty: &Type) -> bool {
    let ty = match ty {
        Type::Paren(p) => return is_byte_vec(&p.elem),
        Type::Group(g) => return is_byte_vec(&g.elem),
        Type::Path(p) if p.qself.is_none() => p,
        _ => return false,
    };
    let segs: Vec<String> = ty
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let path_ok = match segs
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["Vec"] => ty.path.leading_colon.is_none(),
        ["vec", "Vec"] | ["std" | "alloc", "vec", "Vec"] => true,
        _ => false,
    };
    if !path_ok
        || ty
            .path
            .segments
            .iter()
            .rev()
            .skip(1)
            .any(|s| !s.arguments.is_none())
    {
        return false;
    }
    let Some(last) = ty.path.segments.last() else {
        return false;
    };
    let PathArguments::AngleBracketed(a) = &last.arguments else {
        return false;
    };
    if a.args.len() != 1 {
        return false;
    }
    let Some(GenericArgument::Type(Type::Path(elem))) = a.args.first() else {
        return false;
    };
    if elem.qself.is_some() || elem.path.segments.iter().any(|s| !s.arguments.is_none()) {
        return false;
    }
    let names: Vec<String> = elem
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    matches!(
        names
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["u8"] | ["core" | "std", "primitive", "u8"]
    )
}
