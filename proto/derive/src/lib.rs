//! `#[derive(Config)]`: the one place a config field is declared is its
//! struct, with its doc comment and `#[config(...)]` attributes. From that
//! declaration this derive writes how the field is read from a YAML/JSON
//! tree (every problem with its path, unknown fields named), its default,
//! and its JSON Schema (which the published schema and the configuration
//! reference are made from).
//!
//! It generates code for `isame-proto` only: the paths it emits start with
//! `crate::config`.
//!
//! On a struct with named fields:
//! - `#[config(default = EXPR)]`: the field's default (otherwise `Default::default()`);
//! - `#[config(required)]`: a missing field is a problem;
//! - `#[config(min = N, max = N)]`: bounds of a whole number;
//! - `#[config(pattern = EXPR)]`: a regular expression the schema gives the
//!   field (the rule itself is checked where the model's rules are);
//! - `#[config(with = path)]`: read, described and shown by the functions
//!   `path::read`, `path::schema` and `path::to_json` instead of the type's own;
//! - `#[config(shared)]`: read before the other fields and offered as the
//!   base of `#[config(inherit)]` sections of the same type further down;
//! - `#[config(inherit)]` on an `Option<Section>`: fields left out come from
//!   the shared section of that type;
//! - on the struct, `#[config(shorthand = field)]`: a bare string stands for
//!   a mapping with only that field.
//!
//! On an enum, unit variants are read from their snake_case names; newtype
//! variants from a mapping with exactly one key naming the variant.
//! `#[config(what = "...", example = "...")]` on the enum words its errors;
//! `#[config(default)]` on a variant makes it the default.

mod attrs;
mod docs;
mod enums;
mod structs;

use proc_macro::TokenStream;
use syn::{parse_macro_input, Data, DeriveInput};

/// See the crate documentation.
#[proc_macro_derive(Config, attributes(config))]
pub fn derive_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let out = match &input.data {
        Data::Struct(s) => structs::expand(&input, s),
        Data::Enum(e) => enums::expand(&input, e),
        Data::Union(_) => Err(syn::Error::new_spanned(
            &input.ident,
            "Config cannot be derived for a union",
        )),
    };
    out.unwrap_or_else(syn::Error::into_compile_error).into()
}
