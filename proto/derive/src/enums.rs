//! An enum is either a choice of names (unit variants, written as a string)
//! or a choice of shapes (newtype variants, written as a mapping with one
//! key naming the variant).

use crate::{attrs, docs};
use proc_macro2::TokenStream;
use quote::quote;
use syn::{DataEnum, DeriveInput, Fields};

pub fn expand(input: &DeriveInput, data: &DataEnum) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    let item = attrs::item(&input.attrs)?;
    let doc = docs::of(&input.attrs);
    let name_str = ident.to_string();
    let what = item
        .what
        .as_ref()
        .map(syn::LitStr::value)
        .unwrap_or_else(|| attrs::snake_case(ident));
    let example = item
        .example
        .as_ref()
        .map(syn::LitStr::value)
        .unwrap_or_default();

    let units = data
        .variants
        .iter()
        .all(|v| matches!(v.fields, Fields::Unit));
    let newtypes = data
        .variants
        .iter()
        .all(|v| matches!(&v.fields, Fields::Unnamed(f) if f.unnamed.len() == 1));
    if !units && !newtypes {
        return Err(syn::Error::new_spanned(
            ident,
            "Config enums have only unit variants or only one-field variants",
        ));
    }

    let mut names = Vec::new();
    let mut vids = Vec::new();
    let mut vdocs = Vec::new();
    let mut default = None;
    for v in &data.variants {
        let a = attrs::variant(&v.attrs)?;
        let name = a
            .rename
            .as_ref()
            .map(syn::LitStr::value)
            .unwrap_or_else(|| attrs::snake_case(&v.ident));
        if a.default {
            default = Some(v);
        }
        names.push(name);
        vids.push(v.ident.clone());
        vdocs.push(docs::of(&v.attrs));
    }

    if units {
        let default_impl = default.map(|v| {
            let vid = &v.ident;
            quote! {
                impl ::core::default::Default for #ident {
                    fn default() -> Self { Self::#vid }
                }
            }
        });
        return Ok(quote! {
            #default_impl

            impl #ident {
                /// Every value with its config name.
                pub const ALL: &'static [(&'static str, Self)] = &[#((#names, Self::#vids)),*];

                /// The config name.
                pub fn as_str(&self) -> &'static str {
                    match self { #(Self::#vids => #names,)* }
                }
            }

            impl crate::config::schema::Named for #ident {
                const NAME: &'static str = #name_str;

                fn describe(_defs: &mut crate::config::schema::Defs) -> ::serde_json::Value {
                    crate::config::schema::names(#doc, &[#((#names, #vdocs)),*])
                }
            }

            impl crate::config::field::Field for #ident {
                fn read(
                    v: &::serde_json::Value,
                    at: &crate::config::field::Path,
                    r: &mut crate::config::field::Reader,
                ) -> ::core::option::Option<Self> {
                    crate::config::field::read_name(v, at, r, #what, Self::ALL)
                }

                fn schema(defs: &mut crate::config::schema::Defs) -> ::serde_json::Value {
                    defs.reference::<Self>()
                }

                fn to_json(&self) -> ::serde_json::Value {
                    ::serde_json::Value::String(self.as_str().into())
                }
            }
        });
    }

    let tys: Vec<_> = data
        .variants
        .iter()
        .filter_map(|v| match &v.fields {
            Fields::Unnamed(f) => f.unnamed.first().map(|f| f.ty.clone()),
            _ => None,
        })
        .collect();
    let default_impl = default.map(|v| {
        let vid = &v.ident;
        quote! {
            impl ::core::default::Default for #ident {
                fn default() -> Self { Self::#vid(::core::default::Default::default()) }
            }
        }
    });
    Ok(quote! {
        #default_impl

        impl #ident {
            /// Every variant's config name, in the order declared.
            pub const NAMES: &'static [&'static str] = &[#(#names),*];

            /// The config name of this variant.
            pub fn name(&self) -> &'static str {
                match self { #(Self::#vids(_) => #names,)* }
            }
        }

        impl crate::config::schema::Named for #ident {
            const NAME: &'static str = #name_str;

            fn describe(defs: &mut crate::config::schema::Defs) -> ::serde_json::Value {
                crate::config::schema::one_key(
                    #doc,
                    ::std::vec![#((#names, #vdocs, <#tys as crate::config::field::Field>::schema(defs))),*],
                )
            }
        }

        impl crate::config::field::Field for #ident {
            fn read(
                v: &::serde_json::Value,
                at: &crate::config::field::Path,
                r: &mut crate::config::field::Reader,
            ) -> ::core::option::Option<Self> {
                let (name, value, at) =
                    crate::config::field::one_key(v, at, r, #what, #example, Self::NAMES)?;
                match name {
                    // A value that cannot be read keeps its variant, so the
                    // rules of that variant (and their paths) still apply.
                    #(#names => ::core::option::Option::Some(Self::#vids(
                        <#tys as crate::config::field::Field>::read(value, &at, r).unwrap_or_default(),
                    )),)*
                    _ => ::core::option::Option::None,
                }
            }

            fn schema(defs: &mut crate::config::schema::Defs) -> ::serde_json::Value {
                defs.reference::<Self>()
            }

            fn to_json(&self) -> ::serde_json::Value {
                crate::config::field::serialized(self)
            }
        }
    })
}
