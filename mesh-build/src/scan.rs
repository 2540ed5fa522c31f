//! Reading a crate's sources the way the compiler finds them: from the crate root through
//! every `mod` declaration, collecting `#[mesh_service]` traits and `#[derive(SharedObject)]`
//! structs and checking them with mesh-syntax (the macros' own checks).

use std::path::{Path, PathBuf};

use mesh_syntax::analyze::{Kind, analyze};
use mesh_syntax::args::parse_service_args;
use mesh_syntax::errors::Errors;
use mesh_syntax::shared_object::{self, analyze_shared};
use mesh_syntax::types::type_text;
use quote::ToTokens;
use syn::{Attribute, Item, ItemStruct, ItemTrait, Meta};

use crate::error::BuildError;
use crate::manifest::{Arg, FieldEntry, Location, MethodEntry, ServiceEntry, SharedObjectEntry};

/// The most source files one crate may have (a guard against a `#[path]` loop).
const MAX_FILES: usize = 10_000;

/// What a scan found.
#[derive(Default)]
pub(crate) struct Scan {
    /// Every file read, absolute.
    pub(crate) files: Vec<PathBuf>,
    /// The services.
    pub(crate) services: Vec<ServiceEntry>,
    /// The shared objects.
    pub(crate) shared_objects: Vec<SharedObjectEntry>,
}

/// Scans the crate whose root files are `roots` (package root `package`).
pub(crate) fn scan(package: &Path, roots: &[PathBuf]) -> Result<Scan, BuildError> {
    let mut s = Scanner {
        package: package.to_path_buf(),
        out: Scan::default(),
        problems: Vec::new(),
        follow: true,
    };
    for root in roots {
        // A crate root's modules sit beside it, as for `mod.rs`.
        let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
        s.file(root, &dir, &[])?;
    }
    s.finish()
}

/// Scans one source text (labelled `file` in messages) without following `mod x;`.
pub(crate) fn scan_text(file: &str, text: &str) -> Result<Scan, BuildError> {
    let path = PathBuf::from(file);
    let mut s = Scanner {
        package: PathBuf::new(),
        out: Scan::default(),
        problems: Vec::new(),
        follow: false,
    };
    let parsed = parse(&path, text)?;
    s.items(&parsed.items, &path, Path::new(""), &[])?;
    s.finish()
}

fn parse(path: &Path, text: &str) -> Result<syn::File, BuildError> {
    syn::parse_file(text).map_err(|e| {
        let at = e.span().start();
        BuildError::Syntax {
            path: path.to_path_buf(),
            line: at.line,
            column: at.column + 1,
            message: e.to_string(),
        }
    })
}

struct Scanner {
    /// Whether `mod x;` declarations are followed to their files.
    follow: bool,
    package: PathBuf,
    out: Scan,
    /// `file:line:column: message` for every check that failed.
    problems: Vec<String>,
}

impl Scanner {
    fn finish(self) -> Result<Scan, BuildError> {
        if self.problems.is_empty() {
            Ok(self.out)
        } else {
            Err(BuildError::Invalid {
                problems: self.problems,
            })
        }
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.package)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Reads and parses one file; `dir` is where its child modules are.
    fn file(&mut self, path: &Path, dir: &Path, module: &[String]) -> Result<(), BuildError> {
        if self.out.files.len() >= MAX_FILES {
            return Err(BuildError::TooManyFiles { limit: MAX_FILES });
        }
        if self.out.files.iter().any(|f| f == path) {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(|source| BuildError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.out.files.push(path.to_path_buf());
        let file = parse(path, &text)?;
        self.items(&file.items, path, dir, module)
    }

    fn items(
        &mut self,
        items: &[Item],
        path: &Path,
        dir: &Path,
        module: &[String],
    ) -> Result<(), BuildError> {
        for item in items {
            match item {
                Item::Trait(t) if has_attr(&t.attrs, "mesh_service") && !cfg_test(&t.attrs) => {
                    self.service(t, path, module);
                }
                Item::Struct(st) if derives_shared(&st.attrs) && !cfg_test(&st.attrs) => {
                    self.shared_object(st, path, module);
                }
                Item::Mod(m) if !cfg_test(&m.attrs) => {
                    let name = m.ident.to_string();
                    let name = name.strip_prefix("r#").unwrap_or(&name).to_string();
                    let mut inner = module.to_vec();
                    inner.push(name.clone());
                    let explicit = path_attr(&m.attrs);
                    match &m.content {
                        Some((_, items)) => {
                            // An inline module's children are in a directory of its name.
                            let child = match &explicit {
                                Some(p) => dir.join(p),
                                None => dir.join(&name),
                            };
                            self.items(items, path, &child, &inner)?;
                        }
                        None if !self.follow => {}
                        None => {
                            let file = match explicit {
                                Some(p) => dir.join(p),
                                None => {
                                    let flat = dir.join(format!("{name}.rs"));
                                    let nested = dir.join(&name).join("mod.rs");
                                    if flat.exists() {
                                        flat
                                    } else if nested.exists() {
                                        nested
                                    } else {
                                        let at = m.ident.span().start();
                                        return Err(BuildError::MissingModule {
                                            module: name,
                                            path: path.to_path_buf(),
                                            line: at.line,
                                            looked: vec![flat, nested],
                                        });
                                    }
                                }
                            };
                            let child_dir = if is_mod_rs(&file) {
                                file.parent().map(Path::to_path_buf).unwrap_or_default()
                            } else {
                                let stem = file
                                    .file_stem()
                                    .map(|s| s.to_string_lossy().into_owned())
                                    .unwrap_or_default();
                                file.parent().map(|p| p.join(stem)).unwrap_or_default()
                            };
                            self.file(&file, &child_dir, &inner)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn location(&self, path: &Path, span: proc_macro2::Span) -> Location {
        Location {
            file: self.relative(path),
            line: span.start().line,
        }
    }

    fn report(&mut self, path: &Path, errors: Errors) {
        if let Some(e) = errors.into_error() {
            for e in e {
                let at = e.span().start();
                self.problems.push(format!(
                    "{}:{}:{}: {e}",
                    self.relative(path),
                    at.line,
                    at.column + 1
                ));
            }
        }
    }

    fn service(&mut self, item: &ItemTrait, path: &Path, module: &[String]) {
        let mut errors = Errors::default();
        let tokens = item
            .attrs
            .iter()
            .find(|a| is_named(a, "mesh_service"))
            .map(|a| match &a.meta {
                Meta::List(l) => l.tokens.clone(),
                _ => proc_macro2::TokenStream::new(),
            })
            .unwrap_or_default();
        let args = parse_service_args(tokens, &mut errors);
        let methods = analyze(item, &args, &mut errors);
        if errors.count() > 0 {
            self.report(path, errors);
            return;
        }
        let Some(base_id) = args.id else {
            return;
        };
        let name = args.name.clone().unwrap_or_else(|| {
            let t = item.ident.to_string();
            t.strip_prefix("r#").unwrap_or(&t).to_string()
        });
        let methods = methods
            .iter()
            .map(|m| MethodEntry {
                name: m.name.clone(),
                id: m.id,
                kind: match m.kind {
                    Kind::Request => "request",
                    Kind::OneWay => "oneway",
                    Kind::Unreliable => "unreliable",
                }
                .to_string(),
                args: m
                    .args
                    .iter()
                    .map(|(i, t)| Arg {
                        name: i.to_string(),
                        ty: type_text(t),
                    })
                    .collect(),
                returns: m
                    .signature_text
                    .rsplit_once(")->")
                    .map(|(_, r)| r.to_string())
                    .unwrap_or_default(),
                fingerprint: mesh_syntax::fingerprint(&m.signature_text),
                signature: m.signature_text.clone(),
            })
            .collect();
        self.out.services.push(ServiceEntry {
            name,
            path: item_path(module, &item.ident),
            base_id,
            location: self.location(path, item.ident.span()),
            methods,
        });
    }

    fn shared_object(&mut self, item: &ItemStruct, path: &Path, module: &[String]) {
        let mut errors = Errors::default();
        let input: syn::DeriveInput = match syn::parse2(item.to_token_stream()) {
            Ok(i) => i,
            Err(e) => {
                errors.push(e);
                self.report(path, errors);
                return;
            }
        };
        let fields = analyze_shared(&input, &mut errors);
        if errors.count() > 0 {
            self.report(path, errors);
            return;
        }
        let fields = fields
            .iter()
            .map(|f| {
                let (bounds, max_len) = match &f.kind {
                    shared_object::Kind::Counter { min, max, .. } => (Some((*min, *max)), None),
                    shared_object::Kind::Map { max_len, .. } => (None, Some(*max_len)),
                    shared_object::Kind::Value => (None, None),
                };
                let name = f.ident.to_string();
                FieldEntry {
                    name: name.strip_prefix("r#").unwrap_or(&name).to_string(),
                    id: f.id,
                    kind: f.kind.name().to_string(),
                    ty: type_text(&f.ty),
                    bounds,
                    max_len,
                }
            })
            .collect();
        self.out.shared_objects.push(SharedObjectEntry {
            name: item.ident.to_string(),
            path: item_path(module, &item.ident),
            location: self.location(path, item.ident.span()),
            fields,
        });
    }
}

fn item_path(module: &[String], ident: &syn::Ident) -> String {
    let mut parts = module.to_vec();
    parts.push(ident.to_string());
    parts.join("::")
}

fn is_mod_rs(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == "mod.rs")
}

/// An attribute whose path ends in `name` (`mesh_service`, `mesh_core::mesh_service`).
fn is_named(a: &Attribute, name: &str) -> bool {
    a.path().segments.last().is_some_and(|s| s.ident == name)
}

fn has_attr(attrs: &[Attribute], name: &str) -> bool {
    attrs.iter().any(|a| is_named(a, name))
}

/// `#[derive(.., SharedObject, ..)]` (also as a path, `mesh_core::SharedObject`).
fn derives_shared(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            let mut found = false;
            let _ = a.parse_nested_meta(|meta| {
                if meta
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "SharedObject")
                {
                    found = true;
                }
                Ok(())
            });
            found
        })
}

/// `#[cfg(test)]`: compiled into test builds only, never linked into a node.
fn cfg_test(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

/// `#[path = "x.rs"]`.
fn path_attr(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}
