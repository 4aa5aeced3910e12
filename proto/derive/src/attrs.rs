//! The `#[config(...)]` attributes.

use syn::{Attribute, Expr, Ident, LitInt, LitStr, Path};

/// What a field's attributes say.
#[derive(Default)]
pub struct FieldAttrs {
    pub default: Option<Expr>,
    pub required: bool,
    pub shared: bool,
    pub inherit: bool,
    pub with: Option<Path>,
    pub min: Option<LitInt>,
    pub max: Option<LitInt>,
    pub pattern: Option<Expr>,
}

/// What a struct's or enum's own attributes say.
#[derive(Default)]
pub struct ItemAttrs {
    pub shorthand: Option<Ident>,
    pub what: Option<LitStr>,
    pub example: Option<LitStr>,
}

/// What a variant's attributes say.
#[derive(Default)]
pub struct VariantAttrs {
    pub default: bool,
    pub rename: Option<LitStr>,
}

fn each(
    attrs: &[Attribute],
    mut f: impl FnMut(&syn::meta::ParseNestedMeta) -> syn::Result<()>,
) -> syn::Result<()> {
    for a in attrs.iter().filter(|a| a.path().is_ident("config")) {
        a.parse_nested_meta(|m| f(&m))?;
    }
    Ok(())
}

pub fn field(attrs: &[Attribute]) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    each(attrs, |m| {
        if m.path.is_ident("default") {
            out.default = Some(m.value()?.parse()?);
        } else if m.path.is_ident("required") {
            out.required = true;
        } else if m.path.is_ident("shared") {
            out.shared = true;
        } else if m.path.is_ident("inherit") {
            out.inherit = true;
        } else if m.path.is_ident("with") {
            out.with = Some(m.value()?.parse()?);
        } else if m.path.is_ident("min") {
            out.min = Some(m.value()?.parse()?);
        } else if m.path.is_ident("max") {
            out.max = Some(m.value()?.parse()?);
        } else if m.path.is_ident("pattern") {
            out.pattern = Some(m.value()?.parse()?);
        } else {
            return Err(m.error("unknown config attribute"));
        }
        Ok(())
    })?;
    Ok(out)
}

pub fn item(attrs: &[Attribute]) -> syn::Result<ItemAttrs> {
    let mut out = ItemAttrs::default();
    each(attrs, |m| {
        if m.path.is_ident("shorthand") {
            out.shorthand = Some(m.value()?.parse()?);
        } else if m.path.is_ident("what") {
            out.what = Some(m.value()?.parse()?);
        } else if m.path.is_ident("example") {
            out.example = Some(m.value()?.parse()?);
        } else {
            return Err(m.error("unknown config attribute"));
        }
        Ok(())
    })?;
    Ok(out)
}

pub fn variant(attrs: &[Attribute]) -> syn::Result<VariantAttrs> {
    let mut out = VariantAttrs::default();
    each(attrs, |m| {
        if m.path.is_ident("default") {
            out.default = true;
        } else if m.path.is_ident("rename") {
            out.rename = Some(m.value()?.parse()?);
        } else {
            return Err(m.error("unknown config attribute"));
        }
        Ok(())
    })?;
    Ok(out)
}

/// `RoundRobin` → `round_robin`.
pub fn snake_case(ident: &Ident) -> String {
    let mut out = String::new();
    for (i, c) in ident.to_string().chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
