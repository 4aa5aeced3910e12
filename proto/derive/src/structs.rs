//! A struct is a section: a mapping whose keys are its fields.

use crate::{attrs, docs};
use proc_macro2::TokenStream;
use quote::quote;
use syn::{DataStruct, DeriveInput, Fields};

pub fn expand(input: &DeriveInput, data: &DataStruct) -> syn::Result<TokenStream> {
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "Config sections need named fields",
        ));
    };
    let ident = &input.ident;
    let item = attrs::item(&input.attrs)?;
    let doc = docs::of(&input.attrs);
    let name_str = ident.to_string();

    let mut names = Vec::new();
    let mut defaults = Vec::new();
    let mut shared_reads = Vec::new();
    let mut reads = Vec::new();
    let mut props = Vec::new();
    let mut idents = Vec::new();
    for f in &named.named {
        let Some(fid) = &f.ident else { continue };
        let ty = &f.ty;
        let a = attrs::field(&f.attrs)?;
        let key = fid.to_string().trim_start_matches("r#").to_owned();
        let fdoc = docs::of(&f.attrs);
        names.push(key.clone());
        idents.push(fid.clone());

        defaults.push(match &a.default {
            Some(e) => quote! { #fid: #e },
            None => quote! { #fid: ::core::default::Default::default() },
        });

        let min = opt_u64(a.min.as_ref())?;
        let max = opt_u64(a.max.as_ref())?;
        let read = if a.inherit {
            quote! { let #fid: #ty = o.inherited(#key, r); }
        } else if a.required && (a.min.is_some() || a.max.is_some()) {
            quote! { let #fid: #ty = o.required_ranged(#key, r, #min, #max); }
        } else if a.required {
            quote! { let #fid: #ty = o.required(#key, r); }
        } else if let Some(with) = &a.with {
            quote! { let #fid: #ty = o.get_with(#key, &base.#fid, r, #with::read); }
        } else if a.min.is_some() || a.max.is_some() {
            quote! { let #fid: #ty = o.ranged(#key, &base.#fid, r, #min, #max); }
        } else {
            quote! { let #fid: #ty = o.get(#key, &base.#fid, r); }
        };
        if a.shared {
            shared_reads.push(quote! { #read r.share(&#fid); });
        } else {
            reads.push(read);
        }

        let schema = match &a.with {
            Some(with) => quote! { #with::schema(defs) },
            None => quote! { <#ty as crate::config::field::Field>::schema(defs) },
        };
        let pattern = match &a.pattern {
            Some(e) => quote! { ::core::option::Option::Some(#e) },
            None => quote! { ::core::option::Option::None },
        };
        let schema = quote! {
            crate::config::schema::patterned(crate::config::schema::bounded(#schema, #min, #max), #pattern)
        };
        let default = if a.required || a.inherit {
            quote! { ::core::option::Option::None }
        } else {
            match &a.with {
                Some(with) => quote! { crate::config::schema::shown(#with::to_json(&d.#fid)) },
                None => quote! {
                    crate::config::schema::shown(<#ty as crate::config::field::Field>::to_json(&d.#fid))
                },
            }
        };
        let required = a.required;
        let inherit = a.inherit;
        props.push(quote! {
            crate::config::schema::Prop {
                name: #key,
                doc: #fdoc,
                schema: #schema,
                default: #default,
                required: #required,
                inherit: #inherit,
            }
        });
    }

    let (shorthand_read, shorthand_schema) = match &item.shorthand {
        Some(field) => {
            let key = field.to_string();
            (
                quote! {
                    ::core::option::Option::Some(|s: ::std::string::String| Self {
                        #field: s,
                        ..<Self as ::core::default::Default>::default()
                    })
                },
                quote! { ::core::option::Option::Some(#key) },
            )
        }
        None => (
            quote! { ::core::option::Option::None },
            quote! { ::core::option::Option::None },
        ),
    };

    Ok(quote! {
        impl ::core::default::Default for #ident {
            fn default() -> Self {
                Self { #(#defaults,)* }
            }
        }

        impl crate::config::field::Section for #ident {
            const FIELDS: &'static [&'static str] = &[#(#names),*];

            fn read_over(
                base: &Self,
                o: &crate::config::field::Obj<'_>,
                r: &mut crate::config::field::Reader,
            ) -> Self {
                #(#shared_reads)*
                #(#reads)*
                Self { #(#idents),* }
            }
        }

        impl crate::config::schema::Named for #ident {
            const NAME: &'static str = #name_str;

            fn describe(defs: &mut crate::config::schema::Defs) -> ::serde_json::Value {
                let d = <Self as ::core::default::Default>::default();
                crate::config::schema::object(
                    #doc,
                    #shorthand_schema,
                    ::std::vec![#(#props),*],
                )
            }
        }

        impl crate::config::field::Field for #ident {
            fn read(
                v: &::serde_json::Value,
                at: &crate::config::field::Path,
                r: &mut crate::config::field::Reader,
            ) -> ::core::option::Option<Self> {
                crate::config::field::read_section(
                    v,
                    at,
                    r,
                    &<Self as ::core::default::Default>::default(),
                    #shorthand_read,
                )
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

fn opt_u64(lit: Option<&syn::LitInt>) -> syn::Result<TokenStream> {
    Ok(match lit {
        Some(l) => {
            let n: u64 = l.base10_parse()?;
            quote! { ::core::option::Option::Some(#n) }
        }
        None => quote! { ::core::option::Option::None },
    })
}
