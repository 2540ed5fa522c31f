//! The arguments of `#[mesh_service(..)]` and of `#[mesh(..)]` on methods, and the command
//! id checks.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Attribute, Error, LitInt, LitStr, Path, Token};

use crate::errors::Errors;

/// First command id reserved for the framework (`mesh_core::rpc::RESERVED_START`; the
/// mesh-core tests check the two agree).
pub const RESERVED_START: u64 = 65000;

/// The arguments of `#[mesh_service(..)]`.
pub struct ServiceArgs {
    /// The base command id (`None` after an error).
    pub id: Option<u16>,
    /// The service name, if given (default: the trait's name).
    pub name: Option<String>,
    /// The path of mesh-core.
    pub krate: Path,
}

/// The options of `#[mesh(..)]` on one method.
#[derive(Default)]
pub struct MethodOptions {
    /// A pinned id, with its literal for errors.
    pub id: Option<(u64, LitInt)>,
    /// `oneway`.
    pub oneway: bool,
    /// `unreliable`.
    pub unreliable: bool,
}

/// Parses `#[mesh_service(..)]`, reporting every problem to `errors`.
pub fn parse_service_args(attr: TokenStream2, errors: &mut Errors) -> ServiceArgs {
    let mut id: Option<u16> = None;
    let mut name: Option<String> = None;
    let mut krate: Option<Path> = None;
    let mut seen_id = false;
    let mut local = Errors::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("id") {
            let lit: LitInt = meta.value()?.parse()?;
            if seen_id {
                local.spanned(&meta.path, "`id` is given twice");
            }
            seen_id = true;
            match check_id(&lit, "the service id") {
                Ok(v) => id = Some(v),
                Err(e) => local.push(e),
            }
        } else if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if name.is_some() {
                local.spanned(&meta.path, "`name` is given twice");
            }
            let v = lit.value();
            if v.is_empty() {
                local.spanned(&lit, "the service name cannot be empty");
            } else {
                name = Some(v);
            }
        } else if meta.path.is_ident("crate") {
            let p: Path = meta.value()?.parse()?;
            if krate.is_some() {
                local.spanned(&meta.path, "`crate` is given twice");
            }
            krate = Some(p);
        } else {
            local.spanned(
                &meta.path,
                format!(
                    "unknown mesh_service argument `{}`: expected `id = N`, `name = \"..\"` or `crate = path`",
                    meta.path.to_token_stream().to_string().replace(' ', "")
                ),
            );
            skip_value(&meta)?;
        }
        Ok(())
    });
    let parsed = parser.parse2(attr);
    if let Some(e) = local.into_error() {
        errors.push(e);
    }
    if let Err(e) = parsed {
        errors.push(e);
    } else if !seen_id {
        errors.at(
            Span::call_site(),
            "missing the service id: write `#[mesh_service(id = 1000)]` (the first method's \
             command id; the others follow in declaration order)",
        );
    }
    ServiceArgs {
        id,
        name,
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::mesh_core)),
    }
}

/// Skips the value of an unknown option (`= expr` or `(..)`), so parsing goes on.
pub fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream2 = content.parse()?;
    }
    Ok(())
}

/// Checks an id literal: a u16 below the reserved range.
pub fn check_id(lit: &LitInt, what: &str) -> syn::Result<u16> {
    let v: u64 = lit.base10_parse().map_err(|_| {
        Error::new(
            lit.span(),
            format!("{what} must be an integer from 0 to {}", RESERVED_START - 1),
        )
    })?;
    id_in_range(v).map_err(|why| Error::new(lit.span(), format!("{what} {v} {why}")))
}

/// `Ok(id)` if `v` is a usable command id, else why not (to follow "id N ").
pub fn id_in_range(v: u64) -> Result<u16, String> {
    if v > u64::from(u16::MAX) {
        return Err(format!(
            "does not fit a command id (a u16: 0 to 65535; use an id below {RESERVED_START})"
        ));
    }
    if v >= RESERVED_START {
        return Err(format!(
            "is in the range reserved for the framework ({RESERVED_START}-65535): use an id below {RESERVED_START}"
        ));
    }
    // Checked above: fits.
    Ok(u16::try_from(v).unwrap_or_default())
}

/// Parses the `#[mesh(..)]` attributes of a method, reporting every problem to `errors`.
pub fn parse_method_options(attrs: &[Attribute], errors: &mut Errors) -> MethodOptions {
    let mut o = MethodOptions::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("mesh")) {
        let r = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("id") {
                let lit: LitInt = meta.value()?.parse()?;
                if o.id.is_some() {
                    errors.spanned(&meta.path, "`id` is given twice");
                }
                match lit.base10_parse::<u64>() {
                    Ok(v) => o.id = Some((v, lit)),
                    Err(_) => errors.spanned(
                        &lit,
                        format!(
                            "a method id must be an integer from 0 to {}",
                            RESERVED_START - 1
                        ),
                    ),
                }
            } else if meta.path.is_ident("oneway") {
                if o.oneway {
                    errors.spanned(&meta.path, "`oneway` is given twice");
                }
                o.oneway = true;
            } else if meta.path.is_ident("unreliable") {
                if o.unreliable {
                    errors.spanned(&meta.path, "`unreliable` is given twice");
                }
                o.unreliable = true;
            } else {
                errors.spanned(
                    &meta.path,
                    format!(
                        "unknown #[mesh] option `{}`: expected `id = N`, `oneway` or `unreliable`",
                        meta.path.to_token_stream().to_string().replace(' ', "")
                    ),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            errors.push(e);
        }
    }
    o
}
