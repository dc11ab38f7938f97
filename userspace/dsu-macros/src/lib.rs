//! Procedural macros of the [`dsu`](../dsu/index.html) crate. Use them through `dsu`
//! (`dsu::global!`, `#[derive(dsu::Shared)]`); this crate is an implementation detail.
//!
//! ```ignore
//! use std::sync::atomic::AtomicU64;
//!
//! #[derive(dsu::Shared)]
//! #[repr(C)]
//! struct Stats { hits: AtomicU64, misses: AtomicU64 }
//!
//! dsu::global! {
//!     static STATS: Stats = Stats { hits: AtomicU64::new(0), misses: AtomicU64::new(0) };
//! }
//! ```

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, Expr, Fields, GenericArgument, Ident, LitStr, Path,
    PathArguments, Token, Type, Visibility, parse_macro_input,
};

/// Derives `dsu::Shared` for a `#[repr(C)]` or `#[repr(transparent)]` struct whose fields
/// are all `Shared`, and `dsu::SharedCell` when every field is `SharedCell` (atomics,
/// `dsu::sync::Mutex`, arrays of them), so that the struct can be a global.
///
/// The fingerprint hashes the type's name, its size and alignment, and for each field its
/// name, its type's fingerprint, its offset and its size: adding, removing, reordering,
/// renaming or retyping a field changes it. `FIELDS` lists each field's name, type
/// spelling, offset and size for the type description stored in the segment.
///
/// References, raw pointers, `Box`, `Vec`, `String`, `Rc`, `Arc` and function pointers are
/// rejected: they point into one version's private memory.
///
/// ```ignore
/// #[derive(dsu::Shared)]
/// #[repr(C)]
/// struct Point { x: std::sync::atomic::AtomicI32, y: std::sync::atomic::AtomicI32 }
/// ```
#[proc_macro_derive(Shared)]
pub fn derive_shared(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match derive_shared_impl(input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn has_stable_repr(attrs: &[Attribute]) -> syn::Result<bool> {
    let mut ok = false;
    for attr in attrs {
        if attr.path().is_ident("repr") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("C") || meta.path.is_ident("transparent") {
                    ok = true;
                }
                // Skip the arguments of align(N) / packed(N).
                if meta.input.peek(syn::token::Paren) {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let _: TokenStream2 = content.parse()?;
                }
                Ok(())
            })?;
        }
    }
    Ok(ok)
}

/// Returns an error naming the first part of `ty` that cannot be shared between program
/// versions, if any.
fn reject_private_pointers(ty: &Type) -> syn::Result<()> {
    let err = |what: &str| {
        Err(syn::Error::new(
            ty.span(),
            format!(
                "dsu::Shared: {what} cannot be shared between program versions: it points into one \
                 version's private memory (store the data inline, e.g. in a fixed-size array, or in the \
                 shared heap: dsu::heap::Vec, written with its module)"
            ),
        ))
    };
    match ty {
        Type::Reference(_) => err("a reference"),
        Type::Ptr(_) => err("a raw pointer"),
        Type::BareFn(_) => err("a function pointer"),
        Type::TraitObject(_) | Type::ImplTrait(_) => err("a trait object"),
        Type::Slice(_) => err("a slice"),
        Type::Array(a) => reject_private_pointers(&a.elem),
        Type::Tuple(t) => t.elems.iter().try_for_each(reject_private_pointers),
        Type::Paren(p) => reject_private_pointers(&p.elem),
        Type::Group(g) => reject_private_pointers(&g.elem),
        // dsu::heap's containers point into the shared heap, valid in every version;
        // the type system checks what they hold (HeapData). Written with their module
        // (`heap::Vec`) so that this syntactic check can tell them from std's.
        Type::Path(p) if p.path.segments.iter().any(|s| s.ident == "heap") => Ok(()),
        Type::Path(p) => {
            if let Some(last) = p.path.segments.last() {
                let name = last.ident.to_string();
                const FORBIDDEN: &[&str] = &[
                    "Box", "Vec", "String", "Rc", "Arc", "CString", "OsString", "PathBuf",
                    "HashMap", "BTreeMap",
                ];
                if FORBIDDEN.contains(&name.as_str()) {
                    return err(&format!("`{name}`"));
                }
                for seg in &p.path.segments {
                    if let PathArguments::AngleBracketed(args) = &seg.arguments {
                        for arg in &args.args {
                            if let GenericArgument::Type(t) = arg {
                                reject_private_pointers(t)?;
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn derive_shared_impl(input: DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    let data = match &input.data {
        Data::Struct(s) => s,
        _ => {
            return Err(syn::Error::new(
                name.span(),
                "#[derive(dsu::Shared)] supports structs only (implement dsu::Shared by hand for other types)",
            ));
        }
    };
    if !has_stable_repr(&input.attrs)? {
        return Err(syn::Error::new(
            name.span(),
            "#[derive(dsu::Shared)] needs #[repr(C)] or #[repr(transparent)]: the default Rust layout may \
             differ between two builds, so the versions would disagree on where each field is",
        ));
    }
    let mut field_hashes = Vec::new();
    let mut field_descs = Vec::new();
    let mut bounds = Vec::new();
    let mut cell_bounds = Vec::new();
    let fields: Vec<(String, TokenStream2, &Type)> = match &data.fields {
        Fields::Named(f) => f
            .named
            .iter()
            .map(|f| {
                let id = f.ident.as_ref().unwrap();
                (id.to_string(), quote!(#id), &f.ty)
            })
            .collect(),
        Fields::Unnamed(f) => f
            .unnamed
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let idx = syn::Index::from(i);
                (i.to_string(), quote!(#idx), &f.ty)
            })
            .collect(),
        Fields::Unit => Vec::new(),
    };
    for (fname, faccess, fty) in &fields {
        reject_private_pointers(fty)?;
        bounds.push(quote_spanned!(fty.span()=> #fty: ::dsu::Shared));
        // Higher-ranked, so that a field type that is not SharedCell leaves the impl
        // unusable instead of being an error ("trivial bound"): plain-data structs are
        // Shared (for Mutex contents and migrations) but not SharedCell.
        cell_bounds.push(quote!(for<'__dsu> #fty: ::dsu::SharedCell));
        field_hashes.push(quote! {
            let h = h
                .str(#fname)
                .u64(<#fty as ::dsu::Shared>::FINGERPRINT)
                .u64(::core::mem::offset_of!(Self, #faccess) as u64)
                .u64(::core::mem::size_of::<#fty>() as u64);
        });
        let name_c = format!("{fname}\0");
        let type_c = format!("{}\0", quote!(#fty).to_string().replace(' ', ""));
        field_descs.push(quote! {
            ::dsu::typedesc::FieldDesc::new(
                #name_c.as_ptr().cast(),
                #type_c.as_ptr().cast(),
                ::core::mem::offset_of!(Self, #faccess) as u64,
                ::core::mem::size_of::<#fty>() as u64,
            )
        });
    }
    let field_types: Vec<&syn::Type> = fields.iter().map(|(_, _, t)| *t).collect();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_preds: Vec<TokenStream2> = Vec::new();
    if let Some(w) = where_clause {
        for p in &w.predicates {
            where_preds.push(quote!(#p));
        }
    }
    let cell_preds: Vec<TokenStream2> = where_preds.iter().cloned().chain(cell_bounds).collect();
    where_preds.extend(bounds);
    let type_name = name.to_string();
    Ok(quote! {
        // SAFETY: the derive checked that the type has a stable layout (repr(C) or
        // repr(transparent)), holds no pointer into private memory, and that every field
        // is itself Shared (the bounds below).
        unsafe impl #impl_generics ::dsu::Shared for #name #ty_generics where #(#where_preds,)* {
            const FINGERPRINT: u64 = {
                let h = ::dsu::fingerprint::Fnv::new()
                    .str(#type_name)
                    .u64(::core::mem::size_of::<Self>() as u64)
                    .u64(::core::mem::align_of::<Self>() as u64);
                #(#field_hashes)*
                h.finish()
            };
            const FIELDS: &'static [::dsu::typedesc::FieldDesc] = &[#(#field_descs),*];
            const OWNS_HEAP: bool = false #(|| <#field_types as ::dsu::Shared>::OWNS_HEAP)*;
        }

        // SAFETY: a Shared struct whose every field is SharedCell: all its bytes but
        // padding are interior-mutable, and it is Sync (a supertrait, checked here).
        unsafe impl #impl_generics ::dsu::SharedCell for #name #ty_generics where #(#cell_preds,)* {}
    })
}

/// One `static NAME: Type = init;` item inside `global!`.
struct GlobalItem {
    attrs: Vec<Attribute>,
    vis: Visibility,
    ident: Ident,
    ty: Type,
    init: Expr,
    name: Option<LitStr>,
    migrate: Vec<MigrateFrom>,
    zeroed: bool,
}

/// One `migrate(from = Old, with = transform, merge = catch_up)` (or `with_ref = transform`)
/// of a global.
struct MigrateFrom {
    from: Type,
    with: Path,
    merge: Option<Path>,
    /// `with_ref = f`: `f(&'static Old) -> New` reads the old value in place.
    by_ref: bool,
}

struct GlobalItems(Vec<GlobalItem>);

impl Parse for GlobalItems {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut items = Vec::new();
        while !input.is_empty() {
            let all_attrs = input.call(Attribute::parse_outer)?;
            let vis: Visibility = input.parse()?;
            input.parse::<Token![static]>()?;
            if input.peek(Token![mut]) {
                return Err(input.error(
                    "dsu::global! statics cannot be `mut`: use an interior-mutable type (atomics, dsu::sync::Mutex)",
                ));
            }
            let ident: Ident = input.parse()?;
            input.parse::<Token![:]>()?;
            let ty: Type = input.parse()?;
            input.parse::<Token![=]>()?;
            let init: Expr = input.parse()?;
            input.parse::<Token![;]>()?;
            let mut attrs = Vec::new();
            let mut name = None;
            let mut migrate: Vec<MigrateFrom> = Vec::new();
            let mut zeroed = false;
            for attr in all_attrs {
                if !attr.path().is_ident("dsu") {
                    attrs.push(attr);
                    continue;
                }
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("name") {
                        let lit: LitStr = meta.value()?.parse()?;
                        if let Err(why) = check_variable_name(&lit.value()) {
                            return Err(syn::Error::new(lit.span(), why));
                        }
                        name = Some(lit);
                        Ok(())
                    } else if meta.path.is_ident("zeroed") {
                        zeroed = true;
                        Ok(())
                    } else if meta.path.is_ident("migrate") {
                        let mut from = None;
                        let mut with = None;
                        let mut merge = None;
                        let mut by_ref = false;
                        meta.parse_nested_meta(|m| {
                            if m.path.is_ident("from") {
                                from = Some(m.value()?.parse::<Type>()?);
                                Ok(())
                            } else if m.path.is_ident("with") || m.path.is_ident("with_ref") {
                                if with.is_some() {
                                    return Err(m.error("give one of `with = f` and `with_ref = f`"));
                                }
                                by_ref = m.path.is_ident("with_ref");
                                with = Some(m.value()?.parse::<Path>()?);
                                Ok(())
                            } else if m.path.is_ident("merge") {
                                merge = Some(m.value()?.parse::<Path>()?);
                                Ok(())
                            } else {
                                Err(m.error("expected `from = OldType`, `with = transform_fn`, `with_ref = transform_fn` or `merge = merge_fn`"))
                            }
                        })?;
                        let (Some(from), Some(with)) = (from, with) else {
                            return Err(meta.error("migrate needs both `from = OldType` and `with = transform_fn` (or `with_ref = transform_fn`)"));
                        };
                        if by_ref && merge.is_some() {
                            return Err(meta.error("`merge` is not offered with `with_ref`: the transform reads the live old value, so there is nothing to catch up"));
                        }
                        let spelling = type_spelling(&from);
                        if migrate.iter().any(|m| type_spelling(&m.from) == spelling) {
                            return Err(syn::Error::new(
                                from.span(),
                                format!("two `migrate(from = {spelling}, ...)` on one global: give each older type once"),
                            ));
                        }
                        migrate.push(MigrateFrom { from, with, merge, by_ref });
                        Ok(())
                    } else {
                        Err(meta.error("unknown dsu attribute: expected `name = \"...\"`, `zeroed`, `migrate(from = T, with = f[, merge = g])` or `migrate(from = T, with_ref = f)`"))
                    }
                })?;
            }
            items.push(GlobalItem {
                attrs,
                vis,
                ident,
                ty,
                init,
                name,
                migrate,
                zeroed,
            });
        }
        Ok(GlobalItems(items))
    }
}

/// A type as the descriptors spell it: its tokens without spaces.
fn type_spelling(ty: &Type) -> String {
    quote!(#ty).to_string().replace(' ', "")
}

/// The kernel's rule for variable names: 1..127 printable ASCII bytes.
fn check_variable_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 127 {
        return Err(format!(
            "dsu variable name {name:?} must be 1 to 127 bytes long"
        ));
    }
    if !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!(
            "dsu variable name {name:?} must be printable ASCII"
        ));
    }
    Ok(())
}

/// Declares shared globals. See `dsu::global!` for the documentation.
#[proc_macro]
pub fn global(input: TokenStream) -> TokenStream {
    let items = parse_macro_input!(input as GlobalItems);
    let mut out = TokenStream2::new();
    for item in items.0 {
        out.extend(expand_global(item));
    }
    out.into()
}

fn expand_global(item: GlobalItem) -> TokenStream2 {
    let GlobalItem {
        attrs,
        vis,
        ident,
        ty,
        init,
        name,
        migrate,
        zeroed,
    } = item;
    let name_expr = match &name {
        Some(lit) => {
            let v = format!("{}\0", lit.value());
            quote!(#v)
        }
        None => {
            let id = ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #id, "\0"))
        }
    };
    let type_str = format!("{}\0", type_spelling(&ty));
    let desc = format_ident!("__DSU_DESC_{}", ident);
    if let Some(m) = migrate
        .iter()
        .find(|m| type_spelling(&m.from) == type_spelling(&ty))
    {
        return syn::Error::new(
            m.from.span(),
            "`migrate(from = ...)` names the global's own type: a migration needs an older, different type",
        )
        .to_compile_error();
    }
    // One `Migration` static per accepted older type, chained in the order declared: the
    // last is built first so that each can point to the next.
    let mut chain = quote!(::core::ptr::null());
    let mut statics = TokenStream2::new();
    for (
        i,
        MigrateFrom {
            from: old,
            with,
            merge,
            by_ref,
        },
    ) in migrate.iter().enumerate().rev()
    {
        let old_str = format!("{}\0", type_spelling(old));
        let transform = format_ident!("__dsu_transform_{}", i);
        let merge_fn = format_ident!("__dsu_merge_{}", i);
        let mig = format_ident!("__DSU_MIGRATION_{}", i);
        let (merge_def, with_merge) = match merge {
            None => (quote!(), quote!()),
            Some(merge) => (
                quote! {
                    fn #merge_fn(at_attach: *const u8, final_value: *const u8) {
                        // SAFETY: finish_migrations passes two buffers of
                        // `size_of::<Old>()` bytes read from the segment entry whose
                        // fingerprint is Old's, so each holds a valid Old (every bit
                        // pattern of a Shared type is one).
                        let at_attach: #old = unsafe { ::core::ptr::read_unaligned(at_attach.cast::<#old>()) };
                        // SAFETY: as above.
                        let final_value: #old = unsafe { ::core::ptr::read_unaligned(final_value.cast::<#old>()) };
                        let new: &#ty = &#ident;
                        #merge(new, &at_attach, &final_value);
                    }
                },
                quote!(.with_merge(#merge_fn)),
            ),
        };
        let next = if i + 1 < migrate.len() {
            let next = format_ident!("__DSU_MIGRATION_{}", i + 1);
            quote!(.or_from(&#next))
        } else {
            quote!()
        };
        if *by_ref {
            statics.extend(quote! {
                fn #transform(old: *const u8, new: *mut u8) {
                    // SAFETY: attach passes a page-aligned pointer to the live Old of the
                    // segment entry whose fingerprint is Old's, in a view it keeps mapped
                    // for the process's life (so 'static); Old is SharedCell
                    // (Migration::in_place), so a shared reference is sound while other
                    // versions use it.
                    let old: &'static #old = unsafe { &*old.cast::<#old>() };
                    let new_value: #ty = #with(old);
                    // SAFETY: a buffer of `size_of::<New>()` bytes for the result.
                    unsafe { ::core::ptr::write_unaligned(new.cast::<#ty>(), new_value) };
                }
                // SAFETY: a 'static NUL-terminated string; the transform reads the live
                // Old through a shared reference and writes the global's type, and the
                // next migration (if any) is another of this global's, as
                // Migration::in_place and or_from require.
                static #mig: ::dsu::Migration = unsafe {
                    ::dsu::Migration::in_place::<#old>(#old_str.as_ptr().cast(), #transform)
                        #next
                };
            });
            chain = quote!(&#mig);
            continue;
        }
        statics.extend(quote! {
            fn #transform(old: *const u8, new: *mut u8) {
                // SAFETY: attach passes `size_of::<Old>()` bytes read from the segment
                // entry whose fingerprint is Old's, so they hold a valid Old, and a
                // buffer of `size_of::<New>()` bytes for the result.
                let old: #old = unsafe { ::core::ptr::read_unaligned(old.cast::<#old>()) };
                let new_value: #ty = #with(old);
                // SAFETY: see above.
                unsafe { ::core::ptr::write_unaligned(new.cast::<#ty>(), new_value) };
            }
            #merge_def
            // SAFETY: a 'static NUL-terminated string; the transform reads an Old and
            // writes the global's type, the merge reads two Olds and updates the global,
            // and the next migration (if any) is another of this global's, as
            // Migration::new, with_merge and or_from require.
            static #mig: ::dsu::Migration = unsafe {
                ::dsu::Migration::new::<#old>(#old_str.as_ptr().cast(), #transform)
                    #with_merge
                    #next
            };
        });
        chain = quote!(&#mig);
    }
    let migration = if migrate.is_empty() {
        quote!(::core::ptr::null())
    } else {
        quote! {{
            #statics
            #chain
        }}
    };
    // A zeroed global goes to a `.bss.` section, which is NOBITS: no file space. rustc
    // refuses to compile one whose initialiser has a non-zero byte there.
    let (section, zeroed) = if zeroed {
        (".bss.dsu_globals_zero", quote!(.zeroed()))
    } else {
        ("dsu_globals", quote!())
    };
    let span = Span::call_site();
    quote_spanned! {span=>
        #(#attrs)*
        #[unsafe(link_section = #section)]
        #vis static #ident: ::dsu::Global<#ty> = ::dsu::Global::new(#init);

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[::dsu::__private::linkme::distributed_slice(::dsu::GLOBALS)]
        #[linkme(crate = ::dsu::__private::linkme)]
        // SAFETY: 'static NUL-terminated strings; the global is the static above, in the
        // section `dsu_globals` (`.bss.dsu_globals_zero` with `zeroed`, which the descriptor
        // then says), with this one descriptor; the migration (if any) is the one
        // generated for this global's type.
        static #desc: ::dsu::GlobalDesc = unsafe {
            ::dsu::GlobalDesc::new::<#ty>(
                #name_expr.as_ptr().cast(),
                #type_str.as_ptr().cast(),
                &#ident,
                #migration,
            )
        }#zeroed;
    }
}
