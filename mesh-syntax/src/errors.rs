//! The errors found while expanding, collected so they are all reported together.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;
use syn::Error;

/// Errors collected while expanding; reported together.
#[derive(Default)]
pub struct Errors(Option<Error>, usize);

impl Errors {
    /// Adds an error.
    pub fn push(&mut self, e: Error) {
        self.1 += 1;
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// Adds an error at `span`.
    pub fn at(&mut self, span: Span, msg: impl Display) {
        self.push(Error::new(span, msg));
    }

    /// Adds an error spanning `tokens`.
    pub fn spanned(&mut self, tokens: impl ToTokens, msg: impl Display) {
        self.push(Error::new_spanned(tokens, msg));
    }

    /// How many errors were added.
    pub fn count(&self) -> usize {
        self.1
    }

    /// All the errors as one, if there were any.
    pub fn into_error(self) -> Option<Error> {
        self.0
    }
}
