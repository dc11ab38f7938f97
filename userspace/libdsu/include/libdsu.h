/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * libdsu: the C API of dsu, shared globals for multi-version dynamic software update.
 *
 * Declare each long-lived global with DSU_GLOBAL in exactly one C file, call
 * dsu_attach() first thing in main(), before starting threads; from then on the globals
 * are the pages of the named segment, shared by every running version of the program.
 *
 *     #include <libdsu.h>
 *     DSU_GLOBAL(unsigned long, requests, 0);
 *     struct config { int level; unsigned port; };
 *     DSU_TYPE(config, struct config, DSU_FIELD(level, int), DSU_FIELD(port, unsigned));
 *     DSU_GLOBAL_TYPED(config, config, { .level = 2 });
 *
 *     int main(void) {
 *         if (dsu_attach("server", "1.0", 0, 0) < 0) {
 *             fprintf(stderr, "%s\n", dsu_last_error());
 *             return 1;
 *         }
 *         __atomic_fetch_add(&requests, 1, __ATOMIC_RELAXED);
 *     }
 *
 * Variables are matched by name (the C identifier, or the string given to
 * DSU_GLOBAL_NAMED) and by a fingerprint of the type's spelling, size and alignment, and
 * for a struct described with DSU_TYPE of every field's name, type spelling, offset and
 * size: spell types the same way in every version ("unsigned long", not "size_t" in one
 * and "unsigned long" in the other), and describe shared structs with DSU_TYPE. Shared
 * data must not contain pointers. Use atomics (__atomic builtins or _Atomic) for data
 * that versions change concurrently.
 *
 * Link with pkg-config (after `make -C userspace/libdsu install`):
 *     cc prog.c $(pkg-config --cflags --libs dsu)                     (libdsu.so.0)
 *     cc -static prog.c $(pkg-config --cflags --libs --static dsu)    (libdsu.a)
 * Both work for globals defined in the executable: dsu_attach() below is an inline
 * function, compiled into the executable, that passes the bounds of the executable's
 * descriptor section (__start_linkme_DSU_GLOBALS, __stop_linkme_DSU_GLOBALS) to the
 * library. Globals defined in a shared library other than libdsu are not attached (each
 * shared object has its own sections; link such code statically into the program).
 *
 * Errors: every function returns -errno (listed at each function); dsu_strerror() gives a
 * fixed description of a code, dsu_last_error() the message of this thread's last failing
 * call, which says what to do. This header is libdsu.h: the kernel interface is
 * <linux/dsu.h> (uapi/dsu.h in the source tree), which programs never need.
 *
 * Layout (the same as the Rust crate's): each global is alone in whole 4096-byte pages in
 * the section "dsu_globals" (DSU_GLOBAL_ZERO: DSU_ZERO_SECTION); its descriptor, a struct
 * dsu_global_desc, is in the section "linkme_DSU_GLOBALS" (the linkme slice dsu::GLOBALS).
 */
#ifndef DSU_LIBDSU_H
#define DSU_LIBDSU_H

#include <stddef.h>
#include <stdint.h>

/* alignof in C++ and C11, GCC's __alignof__ in C99. */
#if defined(__cplusplus)
#define DSU__ALIGNOF(type) alignof(type)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define DSU__ALIGNOF(type) _Alignof(type)
#else
#define DSU__ALIGNOF(type) __alignof__(type)
#endif

#ifdef __cplusplus
/* DSU_TYPE's check that a field has the listed type. */
template <class A, class B> struct dsu__same_type { enum { value = 0 }; };
template <class A> struct dsu__same_type<A, A> { enum { value = 1 }; };
extern "C" {
#endif

#define DSU_PAGE_SIZE 4096
#define DSU_DESC_MAGIC 0x47555344u      /* "DSUG" in memory: descriptor format 1 */
#define DSU_DESC_HASH_TYPE_NAME (1u << 0) /* fingerprint = hash(type spelling, size, align) */
#define DSU_DESC_ZEROED (1u << 1)          /* in DSU_ZERO_SECTION, not "dsu_globals" */
/* The NOBITS section of DSU_GLOBAL_ZERO globals (the linker merges it into .bss). */
#define DSU_ZERO_SECTION ".bss.dsu_globals_zero"

/* One field of a struct described with DSU_TYPE. Same layout as dsu::typedesc::FieldDesc. */
struct dsu_field_desc {
	const char *name;       /* the field's name */
	const char *type_name;  /* the spelling of its type */
	uint64_t offset;        /* offsetof(struct, field) */
	uint64_t size;          /* sizeof(field) */
};

/* One global's descriptor. Same layout as dsu::GlobalDesc. */
struct dsu_global_desc {
	uint32_t magic;
	uint32_t flags;
	const char *name;       /* variable name in the segment */
	const char *type_name;  /* spelling of the type */
	void *addr;             /* the page-aligned global */
	uint64_t size;          /* sizeof(type) */
	uint64_t align;         /* alignof(type) */
	uint64_t pages;         /* whole pages it occupies */
	uint64_t fingerprint;   /* 0 with DSU_DESC_HASH_TYPE_NAME */
	const void *init;       /* initial bytes */
	const void *migration;  /* NULL in C */
	const struct dsu_field_desc *fields; /* DSU_TYPE's field list, or NULL */
	uint64_t field_count;   /* entries at fields */
};

#define DSU__PAGES(bytes) (((bytes) + DSU_PAGE_SIZE - 1) / DSU_PAGE_SIZE)

/*
 * DSU_GLOBAL(type, name, init...): defines the global `type name = init`, shared under the
 * variable name "name". The initialiser may be a brace list. Other files declare it with
 * DSU_GLOBAL_EXTERN(type, name).
 */
#define DSU_GLOBAL(type, name, ...) DSU_GLOBAL_NAMED(type, name, #name, __VA_ARGS__)

/* As DSU_GLOBAL, with an explicit variable name (a string literal, 1..127 printable ASCII). */
#define DSU_GLOBAL_NAMED(type, name, varname, ...) \
	DSU__GLOBAL(type, name, varname, #type, 0, 0, __VA_ARGS__)

/*
 * DSU_GLOBAL_ZERO(type, name): as DSU_GLOBAL with an all-zero initial value, in the NOBITS
 * section DSU_ZERO_SECTION, so that the global takes no space in the binary's file (a
 * 20 MiB table of zeros costs nothing on disk). DSU_GLOBAL_ZERO_NAMED takes an explicit
 * variable name, DSU_GLOBAL_TYPED_ZERO(id, name) a struct described with DSU_TYPE.
 */
#define DSU_GLOBAL_ZERO(type, name) DSU_GLOBAL_ZERO_NAMED(type, name, #name)
#define DSU_GLOBAL_ZERO_NAMED(type, name, varname) \
	DSU__GLOBAL_ZERO(type, name, varname, #type, 0, 0)
#define DSU_GLOBAL_TYPED_ZERO(id, name)                                                      \
	DSU__GLOBAL_ZERO(dsu__type_##id, name, #name, dsu__type_name_##id, dsu__fields_##id, \
			 sizeof(dsu__fields_##id) / sizeof(dsu__fields_##id[0]))

/*
 * DSU_TYPE(id, type, DSU_FIELD(field, field_type), ...): describes the struct `type`
 * field by field, under the identifier `id`, for DSU_GLOBAL_TYPED. List every field,
 * once, in declaration order (1 to 32 of them), spelling each field's type as declared:
 *
 *     struct conf { uint16_t port; char host[64]; int limit; };
 *     DSU_TYPE(conf, struct conf,
 *              DSU_FIELD(port, uint16_t), DSU_FIELD(host, char[64]), DSU_FIELD(limit, int));
 *     DSU_GLOBAL_TYPED(conf, config, { .port = 80 });
 *
 * The fingerprint then hashes every field's name, type spelling, offset and size (taken
 * from offsetof and sizeof, so from the real layout): two versions whose struct has the
 * same name and size but reordered, renamed or retyped fields conflict instead of sharing
 * bytes, and the conflict names the field that changed. A struct given to plain
 * DSU_GLOBAL is fingerprinted by its spelling, size and alignment only.
 *
 * Checked at compile time: each field's listed type has its size (and, with GCC or clang
 * in C, and in C++, is its type), and the fields are listed in offset order without
 * overlapping. dsu_attach checks the list again (-ENOEXEC).
 */
#define DSU_TYPE(id, type, ...)                                                              \
	typedef type dsu__type_##id;                                                          \
	static const char dsu__type_name_##id[] = #type;                                      \
	static const struct dsu_field_desc dsu__fields_##id[] = {                             \
		DSU__MAP(DSU__FIELD_INIT, type, __VA_ARGS__)                                  \
	};                                                                                    \
	typedef char dsu__fields_in_order_##id[(1 DSU__PAIRS(DSU__ORDERED, type, __VA_ARGS__)) ? 1 : -1]

/* One field of DSU_TYPE: its name and the spelling of its type. */
#define DSU_FIELD(field, field_type) (field, field_type)

/* As DSU_GLOBAL for a struct described with DSU_TYPE(id, ...) in the same file. */
#define DSU_GLOBAL_TYPED(id, name, ...) DSU_GLOBAL_TYPED_NAMED(id, name, #name, __VA_ARGS__)

/* As DSU_GLOBAL_TYPED, with an explicit variable name. */
#define DSU_GLOBAL_TYPED_NAMED(id, name, varname, ...)                                       \
	DSU__GLOBAL(dsu__type_##id, name, varname, dsu__type_name_##id, dsu__fields_##id,    \
		    sizeof(dsu__fields_##id) / sizeof(dsu__fields_##id[0]), __VA_ARGS__)

#define DSU__GLOBAL(type, name, varname, type_name, fields, field_count, ...)               \
	DSU__UNION(type, name);                                                               \
	__attribute__((section("dsu_globals"), aligned(DSU_PAGE_SIZE), used))                 \
	union dsu__u_##name dsu__g_##name = { __VA_ARGS__ };                                  \
	DSU__ALIAS_AND_DESC(type, name, varname, type_name, fields, field_count,              \
			    DSU_DESC_HASH_TYPE_NAME)
/* No initialiser: zero, and GCC makes a ".bss." section NOBITS. */
#define DSU__GLOBAL_ZERO(type, name, varname, type_name, fields, field_count)               \
	DSU__UNION(type, name);                                                               \
	__attribute__((section(DSU_ZERO_SECTION), aligned(DSU_PAGE_SIZE), used))              \
	union dsu__u_##name dsu__g_##name;                                                    \
	DSU__ALIAS_AND_DESC(type, name, varname, type_name, fields, field_count,              \
			    DSU_DESC_HASH_TYPE_NAME | DSU_DESC_ZEROED)
#define DSU__UNION(type, name)                                                               \
	union dsu__u_##name {                                                                 \
		type value;                                                                   \
		unsigned char dsu__pages[DSU__PAGES(sizeof(type)) * DSU_PAGE_SIZE];          \
	}
#define DSU__ALIAS_AND_DESC(type, name, varname, type_name, fields, field_count, flags)     \
	extern type name __attribute__((alias("dsu__g_" #name)));                             \
	__attribute__((section("linkme_DSU_GLOBALS"), aligned(8), used))                      \
	const struct dsu_global_desc dsu__d_##name = {                                        \
		DSU_DESC_MAGIC, flags, varname, type_name, &dsu__g_##name,                    \
		sizeof(type), DSU__ALIGNOF(type), DSU__PAGES(sizeof(type)), 0, &dsu__g_##name,\
		0, fields, field_count                                                        \
	}

/* DSU_TYPE's machinery. */
#define DSU__STRIP(...) __VA_ARGS__
#define DSU__APPLY(m, args) m args
#define DSU__FIELD_INIT(T, f) DSU__APPLY(DSU__FIELD_INIT_, (T, DSU__STRIP f))
#define DSU__FIELD_INIT_(T, f, ft)                                                           \
	{ #f, #ft,                                                                            \
	  offsetof(T, f) + 0 * sizeof(char[DSU__FIELD_IS(T, f, ft) ? 1 : -1]),                 \
	  sizeof(((T *)0)->f) },
#define DSU__ORDERED(T, a, b) && DSU__APPLY(DSU__ORDERED_, (T, DSU__STRIP a, DSU__STRIP b))
#define DSU__ORDERED_(T, fa, ta, fb, tb) (offsetof(T, fa) + sizeof(((T *)0)->fa) <= offsetof(T, fb))
#if defined(__cplusplus)
#define DSU__FIELD_IS(T, f, ft) \
	(sizeof(ft) == sizeof(((T *)0)->f) && dsu__same_type<decltype(((T *)0)->f), ft>::value)
#elif defined(__GNUC__)
#define DSU__FIELD_IS(T, f, ft) \
	(sizeof(ft) == sizeof(((T *)0)->f) && __builtin_types_compatible_p(__typeof__(((T *)0)->f), ft))
#else
#define DSU__FIELD_IS(T, f, ft) (sizeof(ft) == sizeof(((T *)0)->f))
#endif
#define DSU__CAT(a, b) DSU__CAT_(a, b)
#define DSU__CAT_(a, b) a##b
#define DSU__NARGS(...) DSU__NARGS_(__VA_ARGS__, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define DSU__NARGS_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18, _19, _20, _21, _22, _23, _24, _25, _26, _27, _28, _29, _30, _31, _32, n, ...) n
#define DSU__MAP(m, c, ...) DSU__CAT(DSU__MAP, DSU__NARGS(__VA_ARGS__))(m, c, __VA_ARGS__)
#define DSU__MAP1(m, c, a) m(c, a)
#define DSU__MAP2(m, c, a, ...) m(c, a) DSU__MAP1(m, c, __VA_ARGS__)
#define DSU__MAP3(m, c, a, ...) m(c, a) DSU__MAP2(m, c, __VA_ARGS__)
#define DSU__MAP4(m, c, a, ...) m(c, a) DSU__MAP3(m, c, __VA_ARGS__)
#define DSU__MAP5(m, c, a, ...) m(c, a) DSU__MAP4(m, c, __VA_ARGS__)
#define DSU__MAP6(m, c, a, ...) m(c, a) DSU__MAP5(m, c, __VA_ARGS__)
#define DSU__MAP7(m, c, a, ...) m(c, a) DSU__MAP6(m, c, __VA_ARGS__)
#define DSU__MAP8(m, c, a, ...) m(c, a) DSU__MAP7(m, c, __VA_ARGS__)
#define DSU__MAP9(m, c, a, ...) m(c, a) DSU__MAP8(m, c, __VA_ARGS__)
#define DSU__MAP10(m, c, a, ...) m(c, a) DSU__MAP9(m, c, __VA_ARGS__)
#define DSU__MAP11(m, c, a, ...) m(c, a) DSU__MAP10(m, c, __VA_ARGS__)
#define DSU__MAP12(m, c, a, ...) m(c, a) DSU__MAP11(m, c, __VA_ARGS__)
#define DSU__MAP13(m, c, a, ...) m(c, a) DSU__MAP12(m, c, __VA_ARGS__)
#define DSU__MAP14(m, c, a, ...) m(c, a) DSU__MAP13(m, c, __VA_ARGS__)
#define DSU__MAP15(m, c, a, ...) m(c, a) DSU__MAP14(m, c, __VA_ARGS__)
#define DSU__MAP16(m, c, a, ...) m(c, a) DSU__MAP15(m, c, __VA_ARGS__)
#define DSU__MAP17(m, c, a, ...) m(c, a) DSU__MAP16(m, c, __VA_ARGS__)
#define DSU__MAP18(m, c, a, ...) m(c, a) DSU__MAP17(m, c, __VA_ARGS__)
#define DSU__MAP19(m, c, a, ...) m(c, a) DSU__MAP18(m, c, __VA_ARGS__)
#define DSU__MAP20(m, c, a, ...) m(c, a) DSU__MAP19(m, c, __VA_ARGS__)
#define DSU__MAP21(m, c, a, ...) m(c, a) DSU__MAP20(m, c, __VA_ARGS__)
#define DSU__MAP22(m, c, a, ...) m(c, a) DSU__MAP21(m, c, __VA_ARGS__)
#define DSU__MAP23(m, c, a, ...) m(c, a) DSU__MAP22(m, c, __VA_ARGS__)
#define DSU__MAP24(m, c, a, ...) m(c, a) DSU__MAP23(m, c, __VA_ARGS__)
#define DSU__MAP25(m, c, a, ...) m(c, a) DSU__MAP24(m, c, __VA_ARGS__)
#define DSU__MAP26(m, c, a, ...) m(c, a) DSU__MAP25(m, c, __VA_ARGS__)
#define DSU__MAP27(m, c, a, ...) m(c, a) DSU__MAP26(m, c, __VA_ARGS__)
#define DSU__MAP28(m, c, a, ...) m(c, a) DSU__MAP27(m, c, __VA_ARGS__)
#define DSU__MAP29(m, c, a, ...) m(c, a) DSU__MAP28(m, c, __VA_ARGS__)
#define DSU__MAP30(m, c, a, ...) m(c, a) DSU__MAP29(m, c, __VA_ARGS__)
#define DSU__MAP31(m, c, a, ...) m(c, a) DSU__MAP30(m, c, __VA_ARGS__)
#define DSU__MAP32(m, c, a, ...) m(c, a) DSU__MAP31(m, c, __VA_ARGS__)
#define DSU__PAIRS(m, c, ...) DSU__CAT(DSU__PAIRS, DSU__NARGS(__VA_ARGS__))(m, c, __VA_ARGS__)
#define DSU__PAIRS1(m, c, a)
#define DSU__PAIRS2(m, c, a, b) m(c, a, b)
#define DSU__PAIRS3(m, c, a, b, ...) m(c, a, b) DSU__PAIRS2(m, c, b, __VA_ARGS__)
#define DSU__PAIRS4(m, c, a, b, ...) m(c, a, b) DSU__PAIRS3(m, c, b, __VA_ARGS__)
#define DSU__PAIRS5(m, c, a, b, ...) m(c, a, b) DSU__PAIRS4(m, c, b, __VA_ARGS__)
#define DSU__PAIRS6(m, c, a, b, ...) m(c, a, b) DSU__PAIRS5(m, c, b, __VA_ARGS__)
#define DSU__PAIRS7(m, c, a, b, ...) m(c, a, b) DSU__PAIRS6(m, c, b, __VA_ARGS__)
#define DSU__PAIRS8(m, c, a, b, ...) m(c, a, b) DSU__PAIRS7(m, c, b, __VA_ARGS__)
#define DSU__PAIRS9(m, c, a, b, ...) m(c, a, b) DSU__PAIRS8(m, c, b, __VA_ARGS__)
#define DSU__PAIRS10(m, c, a, b, ...) m(c, a, b) DSU__PAIRS9(m, c, b, __VA_ARGS__)
#define DSU__PAIRS11(m, c, a, b, ...) m(c, a, b) DSU__PAIRS10(m, c, b, __VA_ARGS__)
#define DSU__PAIRS12(m, c, a, b, ...) m(c, a, b) DSU__PAIRS11(m, c, b, __VA_ARGS__)
#define DSU__PAIRS13(m, c, a, b, ...) m(c, a, b) DSU__PAIRS12(m, c, b, __VA_ARGS__)
#define DSU__PAIRS14(m, c, a, b, ...) m(c, a, b) DSU__PAIRS13(m, c, b, __VA_ARGS__)
#define DSU__PAIRS15(m, c, a, b, ...) m(c, a, b) DSU__PAIRS14(m, c, b, __VA_ARGS__)
#define DSU__PAIRS16(m, c, a, b, ...) m(c, a, b) DSU__PAIRS15(m, c, b, __VA_ARGS__)
#define DSU__PAIRS17(m, c, a, b, ...) m(c, a, b) DSU__PAIRS16(m, c, b, __VA_ARGS__)
#define DSU__PAIRS18(m, c, a, b, ...) m(c, a, b) DSU__PAIRS17(m, c, b, __VA_ARGS__)
#define DSU__PAIRS19(m, c, a, b, ...) m(c, a, b) DSU__PAIRS18(m, c, b, __VA_ARGS__)
#define DSU__PAIRS20(m, c, a, b, ...) m(c, a, b) DSU__PAIRS19(m, c, b, __VA_ARGS__)
#define DSU__PAIRS21(m, c, a, b, ...) m(c, a, b) DSU__PAIRS20(m, c, b, __VA_ARGS__)
#define DSU__PAIRS22(m, c, a, b, ...) m(c, a, b) DSU__PAIRS21(m, c, b, __VA_ARGS__)
#define DSU__PAIRS23(m, c, a, b, ...) m(c, a, b) DSU__PAIRS22(m, c, b, __VA_ARGS__)
#define DSU__PAIRS24(m, c, a, b, ...) m(c, a, b) DSU__PAIRS23(m, c, b, __VA_ARGS__)
#define DSU__PAIRS25(m, c, a, b, ...) m(c, a, b) DSU__PAIRS24(m, c, b, __VA_ARGS__)
#define DSU__PAIRS26(m, c, a, b, ...) m(c, a, b) DSU__PAIRS25(m, c, b, __VA_ARGS__)
#define DSU__PAIRS27(m, c, a, b, ...) m(c, a, b) DSU__PAIRS26(m, c, b, __VA_ARGS__)
#define DSU__PAIRS28(m, c, a, b, ...) m(c, a, b) DSU__PAIRS27(m, c, b, __VA_ARGS__)
#define DSU__PAIRS29(m, c, a, b, ...) m(c, a, b) DSU__PAIRS28(m, c, b, __VA_ARGS__)
#define DSU__PAIRS30(m, c, a, b, ...) m(c, a, b) DSU__PAIRS29(m, c, b, __VA_ARGS__)
#define DSU__PAIRS31(m, c, a, b, ...) m(c, a, b) DSU__PAIRS30(m, c, b, __VA_ARGS__)
#define DSU__PAIRS32(m, c, a, b, ...) m(c, a, b) DSU__PAIRS31(m, c, b, __VA_ARGS__)

/* Declares a global defined with DSU_GLOBAL in another file. */
#define DSU_GLOBAL_EXTERN(type, name) extern type name

/* dsu_attach flags. */
#define DSU_MUST_EXIST  (1u << 0) /* fail with -ENOENT if the segment is missing */
#define DSU_MUST_CREATE (1u << 1) /* fail with -EEXIST if the segment exists */
#define DSU_PREFAULT    (1u << 2) /* map every page at attach instead of on first touch */
/* Create the segment's shared heap if it has none (1 GiB of address space, pages only as it
 * grows). A heap the segment has is mapped at attach with or without this flag; either way
 * dsu_attach then makes it the process's heap, which dsu_malloc and friends allocate in. */
#define DSU_HEAP        (1u << 3)
/* Attach as a candidate: older versions learn of this one only at dsu_ready(); if it exits
 * before, they are told it aborted and what it added is removed. Without this flag the
 * version is ready at attach (the behaviour of libdsu before dsu_ready). */
#define DSU_CANDIDATE   (1u << 4)

/*
 * Attaches the globals described by first..end (a descriptor section's bounds, or NULL,
 * NULL for none). Programs call dsu_attach(), which passes their own section.
 */
int dsu_attach_descs(const char *segment, const char *version, unsigned int flags,
		     unsigned int mode, const struct dsu_global_desc *first,
		     const struct dsu_global_desc *end);

/* As dsu_attach_descs, sharing the segment with the user `owner` (dsu_attach_shared). */
int dsu_attach_shared_descs(const char *segment, const char *version, unsigned int flags,
			    unsigned int mode, unsigned int owner,
			    const struct dsu_global_desc *first,
			    const struct dsu_global_desc *end);

/* The linker's bounds of this executable's descriptor section (both NULL without one). */
extern const struct dsu_global_desc __start_linkme_DSU_GLOBALS[]
	__attribute__((weak, visibility("hidden")));
extern const struct dsu_global_desc __stop_linkme_DSU_GLOBALS[]
	__attribute__((weak, visibility("hidden")));

/*
 * Attaches this program's globals to `segment` as version `version` (a label, 1..31
 * printable ASCII bytes). `flags`: DSU_MUST_EXIST, DSU_MUST_CREATE, DSU_PREFAULT, DSU_HEAP,
 * DSU_CANDIDATE. `mode`:
 * permission bits of a segment this call creates (0: 0600). Call it before other threads
 * touch the globals, with no lock in a global held (their pages are replaced). It
 * succeeds once per process. Returns 0 or:
 *   -EINVAL    bad segment name, label, flags or mode (or a NULL string)
 *   -ENODEV    /dev/dsu is missing: load the module
 *   -EACCES    the segment's mode (or /dev/dsu's) denies access
 *   -EPERM     the segment is owned by another user (see dsu_attach_shared)
 *   -ENOENT    the segment does not exist (DSU_MUST_EXIST)
 *   -EEXIST    the segment exists (DSU_MUST_CREATE), or a global changed type, size or
 *              fields (a conflict: nothing was changed, the globals stay private)
 *   -ENOSPC    a module limit (segments, pages, variables, versions) was reached
 *   -ENOMEM    out of memory
 *   -EIDRM     the segment was destroyed meanwhile
 *   -EALREADY  dsu_attach already succeeded in this process
 *   -EBUSY     this thread holds a lock of a global (Rust code's dsu::sync::MutexGuard)
 *   -ENOEXEC   the globals do not tile the dsu_globals section, two have the same name,
 *              or a descriptor is malformed (a header from another libdsu)
 *   -EOPNOTSUPP the page size is not 4096
 *   -EPROTO    the module and the library disagree
 *   -EADDRINUSE the segment's shared heap lives at an address this process already uses
 *              (nothing was changed in the segment)
 *   other      an unexpected errno from the module or a system call
 */
static inline int dsu_attach(const char *segment, const char *version, unsigned int flags,
			     unsigned int mode)
{
	return dsu_attach_descs(segment, version, flags, mode, __start_linkme_DSU_GLOBALS,
				__stop_linkme_DSU_GLOBALS);
}

/*
 * Like dsu_attach, but shares the segment with the user `owner` (a uid) who owns it. By
 * default dsu_attach only joins a segment this user owns (another owner: -EPERM), so that
 * a name another user created first never receives this program's globals. Here an
 * existing segment must be owned by `owner`, and a missing one is created only if `owner`
 * is this user's uid (else -ENOENT). The segment's mode must still grant access.
 */
static inline int dsu_attach_shared(const char *segment, const char *version,
				    unsigned int flags, unsigned int mode, unsigned int owner)
{
	return dsu_attach_shared_descs(segment, version, flags, mode, owner,
				       __start_linkme_DSU_GLOBALS, __stop_linkme_DSU_GLOBALS);
}

/*
 * The message of this thread's last failing call ("" if none): what happened and what to
 * do. The buffer belongs to libdsu and stays unchanged until this thread's next failing
 * call (successful calls leave it alone); it is freed when the thread exits.
 */
const char *dsu_last_error(void);

/* A fixed description of a -errno value as libdsu uses it (strerror for others). */
const char *dsu_strerror(int code);

/* The version's pollable fd (POLLIN when an event is queued: a version bound, became
 * ready, aborted or ended), or -EBADFD before a successful dsu_attach. */
int dsu_fd(void);

/* The version id the kernel assigned, or -EBADFD before a successful dsu_attach. */
int64_t dsu_version_id(void);

/* 1 if a newer version is ready and live (non-blocking), 0 if not; -EBADFD before
 * dsu_attach, -EIDRM if the segment was destroyed, other -errno from the module. */
int dsu_newer_version(void);

/* Waits up to timeout_ms (< 0: forever) for a newer version: 1 if one is ready, 0 on
 * timeout; the errors of dsu_newer_version, and -EINTR if a signal interrupted it. */
int dsu_wait_for_newer(int timeout_ms);

/*
 * The shared heap: memory every version maps at the same address, so that heap objects
 * hold ordinary pointers to each other (a `struct node *next` is valid in every version).
 * Globals may point into the heap; heap objects must never point to globals or to a
 * version's private memory (globals sit at per-version addresses).
 *
 * The four functions work like malloc(3) on the attached segment's heap: blocks are
 * aligned to 16 bytes; on failure they return NULL with errno = ENOMEM, also when no heap
 * is attached. Any version may free or resize a block another version allocated. They
 * are thread-safe and process-safe, and crash-consistent: a process killed inside one of
 * them loses at most that call's block. They are not async-signal-safe (do not call them
 * from a signal handler that may interrupt one of them). Passing dsu_free or dsu_realloc
 * a pointer that is not a heap block aborts the process.
 *
 *     struct node { struct node *next; long value; };
 *     struct node *n = dsu_malloc(sizeof *n);
 *     if (!n) return -errno;
 *     n->next = head; n->value = 1; head = n;   // head: a DSU_GLOBAL, under a lock
 */
void *dsu_malloc(size_t size);
/* n * size zero bytes (NULL and ENOMEM if the product overflows). */
void *dsu_calloc(size_t n, size_t size);
/* NULL ptr: dsu_malloc; size 0: frees ptr and returns NULL; on failure the block is kept. */
void *dsu_realloc(void *ptr, size_t size);
/* NULL is ignored. */
void dsu_free(void *ptr);

/* The shared heap's counters (dsu_heap_stats). Block sizes include 16-byte headers. */
struct dsu_heap_stats {
	uint64_t base;		   /* the heap's address, the same in every version */
	uint64_t size;		   /* bytes backed now */
	uint64_t allocated_bytes;  /* bytes in allocated blocks */
	uint64_t allocated_blocks; /* allocated blocks */
	uint64_t free_bytes;	   /* bytes in free blocks */
	uint64_t free_blocks;	   /* free blocks */
	uint64_t largest_free;	   /* the largest free block: the most one call gets without growing */
};

/* Fills *out: 0, -EBADFD if no heap is attached, -EINVAL if out is NULL. */
int dsu_heap_stats(struct dsu_heap_stats *out);

/* Commits a version attached with DSU_CANDIDATE once its start-up succeeded: older
 * versions are told it is ready (dsu_newer_version) and may retire. Idempotent; 0 for a
 * version that is ready already. 0, -EBADFD before dsu_attach, other -errno from the
 * module. */
int dsu_ready(void);

/* Reclaims the segment's variables that no live version declares and no ready version
 * used for min_age generations (< 0: the module's gc_min_age); with dry_run, only counts.
 * Returns how many (>= 0), or -EBADFD before dsu_attach, -EACCES, other -errno. */
int dsu_collect_garbage(int min_age, int dry_run);

/* dsu_snapshot flag: compress the file's blocks with zstd. */
#define DSU_SNAPSHOT_COMPRESS (1u << 0)

/*
 * Writes a point-in-time snapshot of `segment` (every variable, the directory, the shared
 * heap, as they were at one instant) to the file `path`, atomically (a temporary file
 * beside it, fsync, rename, fsync of the directory), while its versions keep running.
 * It looks for an instant at which no dsu lock of the segment is held (up to 100
 * snapshots, each dropped as soon as it shows a held lock), as `dsuctl save` does.
 * flags: 0 or DSU_SNAPSHOT_COMPRESS. Needs no dsu_attach, and read permission on the
 * segment. Returns 0, or -ENOENT (no such segment), -EACCES, -EBUSY (another snapshot of
 * it is in progress), -ENOMEM, or the file's -errno; dsu_last_error() says more.
 */
int dsu_snapshot(const char *segment, const char *path, unsigned int flags);

/*
 * Recreates a segment from the snapshot file `path`, under `segment` (NULL: the name it
 * was saved under), owned by the caller with the image's mode; call it before dsu_attach,
 * which then finds the globals common, as they were at the snapshot. flags must be 0.
 * The whole file is checked before the segment appears. Returns 0, or -EEXIST (the name
 * is taken; nothing changed), -EBADMSG (truncated, corrupt or newer-format file; nothing
 * created), -ENOENT (no such file), -ENOMEM, -ENOSPC; dsu_last_error() says what to do.
 */
int dsu_restore(const char *path, const char *segment, unsigned int flags);

#ifdef __cplusplus
}
#endif

#endif /* DSU_LIBDSU_H */
