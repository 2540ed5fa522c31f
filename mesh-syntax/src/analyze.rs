//! Checking the trait and its methods: what the generated code relies on, with every
//! problem reported at the offending tokens.

use std::collections::HashMap;

use proc_macro2::Span;
use quote::format_ident;
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, Ident, ItemTrait, Pat, PatIdent, ReturnType, Signature, TraitItem,
    TraitItemFn, Type,
};

use crate::args::{ServiceArgs, id_in_range, parse_method_options};
use crate::errors::Errors;
use crate::types::{check_type, fallible, is_call_context, is_unit, type_text};

/// Names the generated client and broadcast types define themselves: a method may not use
/// them.
pub const RESERVED_NAMES: &[&str] = &[
    "new",
    "for_node",
    "for_type",
    "random_of_type",
    "on",
    "with_timeout",
    "with_limit",
    "as_client",
    "to_type",
    "to_nodes",
    "as_broadcast",
    "clone",
];

/// How a method is delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request with a response.
    Request,
    /// A reliable one-way message (`#[mesh(oneway)]`).
    OneWay,
    /// One unreliable datagram (`#[mesh(unreliable)]`).
    Unreliable,
}

/// What a method returns.
pub enum Output {
    /// A value (possibly `()`) that cannot fail remotely.
    Value(Box<Type>),
    /// `Result<T, E>`: `E` is the remote error.
    Fallible(Box<Type>, Box<Type>),
}

/// One method, checked.
pub struct MethodInfo {
    /// The method's name as written.
    pub ident: Ident,
    /// The name without `r#`.
    pub name: String,
    /// The command id.
    pub id: u16,
    /// The client's constant holding the id (`HELLO`).
    pub id_const: Ident,
    /// The client's constant holding the fingerprint (`HELLO_FINGERPRINT`).
    pub fp_const: Ident,
    /// How it is delivered.
    pub kind: Kind,
    /// Whether its first argument is a `CallContext` (not sent).
    pub has_ctx: bool,
    /// The arguments that are sent.
    pub args: Vec<(Ident, Type)>,
    /// What it returns.
    pub output: Output,
    /// Its doc comments.
    pub docs: Vec<Attribute>,
    /// What its fingerprint hashes: `Service::method(A,B)->R`.
    pub signature_text: String,
}

/// Checks the trait and its methods; returns the methods that passed (the caller emits
/// nothing but errors if any check failed).
pub fn analyze(item: &ItemTrait, args: &ServiceArgs, errors: &mut Errors) -> Vec<MethodInfo> {
    let trait_ident = &item.ident;
    if let Some(u) = &item.unsafety {
        errors.spanned(u, "a mesh service trait cannot be `unsafe`");
    }
    if let Some(a) = &item.auto_token {
        errors.spanned(a, "a mesh service trait cannot be an auto trait");
    }
    if !item.generics.params.is_empty() {
        errors.spanned(
            &item.generics.params,
            "a mesh service trait cannot be generic: both sides must agree on every type",
        );
    }
    if let Some(w) = &item.generics.where_clause {
        errors.spanned(w, "a mesh service trait cannot have a where clause");
    }
    let service = args
        .name
        .clone()
        .unwrap_or_else(|| trait_ident.unraw().to_string());
    let mut methods = Vec::new();
    let mut index: u64 = 0;
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                let position = index;
                index += 1;
                if let Some(m) = analyze_method(f, position, &service, args.id, errors) {
                    methods.push(m);
                }
            }
            TraitItem::Type(t) => errors.spanned(
                t.type_token,
                "a mesh service trait holds only async methods: associated types cannot cross \
                 the network (use concrete types)",
            ),
            TraitItem::Const(c) => errors.spanned(
                c.const_token,
                "a mesh service trait holds only async methods: move the constant out of the trait",
            ),
            other => errors.spanned(other, "a mesh service trait holds only async methods"),
        }
    }
    check_unique(trait_ident, &methods, errors);
    methods
}

/// Duplicate ids and generated names that collide.
fn check_unique(trait_ident: &Ident, methods: &[MethodInfo], errors: &mut Errors) {
    let client = format_ident!("{}Client", trait_ident.unraw());
    let mut ids: HashMap<u16, &str> = HashMap::new();
    let mut consts: HashMap<String, String> = HashMap::new();
    consts.insert("SERVICE_NAME".into(), "the service name".into());
    for m in methods {
        if let Some(first) = ids.get(&m.id) {
            errors.spanned(
                &m.ident,
                format!(
                    "command id {} of `{}` is already used by `{}`: ids are the service id plus \
                     the method's position unless pinned with #[mesh(id = N)]; pick a free one",
                    m.id, m.name, first
                ),
            );
        } else {
            ids.insert(m.id, &m.name);
        }
        if RESERVED_NAMES.contains(&m.name.as_str()) {
            errors.spanned(
                &m.ident,
                format!(
                    "a method cannot be named `{}`: the generated `{client}` and `{}Broadcast` \
                     have their own `{}` (reserved: {}); rename the method",
                    m.name,
                    trait_ident.unraw(),
                    m.name,
                    RESERVED_NAMES.join(", ")
                ),
            );
        }
        for (c, what) in [
            (
                m.id_const.to_string(),
                format!("the command id of `{}`", m.name),
            ),
            (
                m.fp_const.to_string(),
                format!("the fingerprint of `{}`", m.name),
            ),
        ] {
            if let Some(other) = consts.get(&c) {
                errors.spanned(
                    &m.ident,
                    format!(
                        "`{}` would generate the constant `{client}::{c}`, which is already {other}; \
                         rename the method",
                        m.name
                    ),
                );
            } else {
                consts.insert(c, what);
            }
        }
    }
}

/// Checks one method; `None` if anything was wrong (reported to `errors`).
fn analyze_method(
    f: &TraitItemFn,
    position: u64,
    service: &str,
    base: Option<u16>,
    errors: &mut Errors,
) -> Option<MethodInfo> {
    let before = errors.count();
    let sig = &f.sig;
    let name = sig.ident.unraw().to_string();
    let options = parse_method_options(&f.attrs, errors);
    for a in &f.attrs {
        if a.path().is_ident("cfg") || a.path().is_ident("cfg_attr") {
            errors.spanned(
                a,
                "conditional methods are not supported in a mesh service: every node must see \
                 the same methods with the same ids",
            );
        }
    }
    check_signature(sig, errors);

    // Arguments: the receiver, an optional context, then what is sent.
    let mut has_ctx = false;
    let mut args = Vec::new();
    let mut typed_index = 0usize;
    let mut saw_receiver = false;
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                saw_receiver = true;
                if r.colon_token.is_some() {
                    errors.spanned(
                        r,
                        "mesh service methods take `&self`; `self: Type` receivers are not supported",
                    );
                } else if r.reference.is_none() {
                    errors.spanned(
                        r,
                        "mesh service methods take `&self`, not `self` by value: the server calls \
                         the same instance for every request",
                    );
                } else if let Some(m) = &r.mutability {
                    errors.spanned(
                        m,
                        "mesh service methods take `&self`, not `&mut self`: requests run \
                         concurrently; use interior mutability (a Mutex, atomics)",
                    );
                } else if let Some((_, Some(lt))) = &r.reference {
                    errors.spanned(lt, "write `&self` without a lifetime");
                }
            }
            FnArg::Typed(pt) => {
                let i = typed_index;
                typed_index += 1;
                if is_call_context(&pt.ty) {
                    if i == 0 {
                        has_ctx = true;
                    } else {
                        errors.spanned(
                            &pt.ty,
                            "the `CallContext` must be the first argument after `&self` (it is \
                             not sent: the server fills it in)",
                        );
                    }
                    continue;
                }
                let ident = match &*pt.pat {
                    Pat::Ident(PatIdent {
                        by_ref: None,
                        subpat: None,
                        ident,
                        ..
                    }) => ident.clone(),
                    Pat::Wild(_) => Ident::new(&format!("arg{i}"), Span::mixed_site()),
                    other => {
                        errors.spanned(
                            other,
                            "patterns are not supported in mesh service arguments: name the \
                             argument (`pair: (i32, i32)`) and destructure it in the implementation",
                        );
                        continue;
                    }
                };
                check_type(&pt.ty, "an argument", errors);
                args.push((ident, (*pt.ty).clone()));
            }
        }
    }
    if !saw_receiver {
        errors.spanned(
            &sig.ident,
            "mesh service methods take `&self` as their first argument (associated functions \
             cannot be called remotely)",
        );
    }

    // What it returns.
    let kind = if options.unreliable {
        Kind::Unreliable
    } else if options.oneway {
        Kind::OneWay
    } else {
        Kind::Request
    };
    let output = match &sig.output {
        ReturnType::Default => Output::Value(Box::new(syn::parse_quote!(()))),
        ReturnType::Type(_, ty) => {
            check_type(ty, "the return type", errors);
            match fallible(ty) {
                Some((t, e)) => Output::Fallible(Box::new(t), Box::new(e)),
                None => Output::Value(ty.clone()),
            }
        }
    };
    if kind != Kind::Request
        && let ReturnType::Type(_, ty) = &sig.output
        && !is_unit(ty)
    {
        let which = if kind == Kind::OneWay {
            "oneway"
        } else {
            "unreliable"
        };
        errors.spanned(
            ty,
            format!(
                "a #[mesh({which})] method returns `()`: it gets no response; remove the return \
                 type, or remove `{which}` to make it a request"
            ),
        );
    }

    // Its id.
    let id = match (&options.id, base) {
        (Some((v, lit)), _) => match id_in_range(*v) {
            Ok(id) => Some(id),
            Err(why) => {
                errors.spanned(lit, format!("the id {v} of `{name}` {why}"));
                None
            }
        },
        (None, Some(base)) => {
            let v = u64::from(base) + position;
            match id_in_range(v) {
                Ok(id) => Some(id),
                Err(why) => {
                    errors.spanned(
                        &sig.ident,
                        format!(
                            "`{name}` would get the command id {v} (the service id {base} + its \
                             position {position}), which {why}; or pin it with #[mesh(id = N)]"
                        ),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    };

    if errors.count() != before {
        return None;
    }
    let id = id?;
    let upper = name.to_uppercase();
    // Upper-casing some Unicode names gives no identifier: report it rather than panic.
    let constant = |text: String| match syn::parse_str::<Ident>(&text) {
        Ok(mut i) => {
            i.set_span(sig.ident.span());
            Some(i)
        }
        Err(_) => None,
    };
    let (Some(id_const), Some(fp_const)) = (
        constant(upper.clone()),
        constant(format!("{upper}_FINGERPRINT")),
    ) else {
        errors.spanned(
            &sig.ident,
            format!("`{name}` upper-cased (`{upper}`) is not an identifier for its id constant: rename the method"),
        );
        return None;
    };
    let ret_text = match &sig.output {
        ReturnType::Default => "()".to_string(),
        ReturnType::Type(_, ty) => type_text(ty),
    };
    let arg_text: Vec<String> = args.iter().map(|(_, t)| type_text(t)).collect();
    let signature_text = format!("{service}::{name}({})->{ret_text}", arg_text.join(","));
    Some(MethodInfo {
        ident: sig.ident.clone(),
        name,
        id,
        id_const,
        fp_const,
        kind,
        has_ctx,
        args,
        output,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        signature_text,
    })
}

/// `async`, not generic, not const/unsafe/extern/variadic.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    if let Some(c) = &sig.constness {
        errors.spanned(c, "mesh service methods cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        errors.spanned(u, "mesh service methods cannot be `unsafe`");
    }
    if let Some(a) = &sig.abi {
        errors.spanned(a, "mesh service methods cannot have an ABI");
    }
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!(
                "mesh service methods must be `async fn`: write `async fn {}(..)`",
                sig.ident
            ),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "mesh service methods cannot be generic: both sides must agree on the exact types \
             sent; use concrete types",
        );
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.spanned(w, "mesh service methods cannot have a where clause");
    }
    if let Some(v) = &sig.variadic {
        errors.spanned(v, "mesh service methods cannot be variadic");
    }
}
