/* SPDX-License-Identifier: GPL-2.0 */
/*
 * libdsu: the C API of dsu, shared globals for multi-version dynamic software update.
 *
 * Declare each long-lived global with DSU_GLOBAL in exactly one C file, call
 * dsu_attach() first thing in main(), before starting threads; from then on the globals
 * are the pages of the named segment, shared by every running version of the program.
 *
 *     #include <dsu.h>
 *     DSU_GLOBAL(unsigned long, requests, 0);
 *     DSU_GLOBAL(struct config, config, { .level = 2 });
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
 * DSU_GLOBAL_NAMED) and by a fingerprint of the type's spelling, size and alignment:
 * spell the type the same way in every version ("unsigned long", not "size_t" in one and
 * "unsigned long" in the other). Shared data must not contain pointers. Use atomics
 * (__atomic builtins or _Atomic) for data that versions change concurrently.
 *
 * Link: gcc -static prog.c -I include libdsuc.a -lpthread -ldl -lm (see
 * build-examples.sh). Use the static library: the descriptors are found through a linker
 * section of the executable that libdsu is linked into, so the shared library libdsuc.so
 * only sees globals of programs linked with it as a whole (not those of the executable).
 *
 * Layout (the same as the Rust crate's): each global is alone in whole 4096-byte pages in
 * the section "dsu_globals"; its descriptor, a struct dsu_global_desc, is in the section
 * "linkme_DSU_GLOBALS" (the linkme slice dsu::GLOBALS).
 */
#ifndef DSU_LIBDSU_H
#define DSU_LIBDSU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSU_PAGE_SIZE 4096
#define DSU_DESC_MAGIC 0x47555344u      /* "DSUG" in memory: descriptor format 1 */
#define DSU_DESC_HASH_TYPE_NAME (1u << 0) /* fingerprint = hash(type spelling, size, align) */

/* One global's descriptor. Same layout as dsu::GlobalDesc. */
struct dsu_global_desc {
	uint32_t magic;
	uint32_t flags;
	const char *name;       /* variable name in the segment */
	const char *type_name;  /* spelling of the type */
	void *addr;             /* the page-aligned global */
	uint64_t size;          /* sizeof(type) */
	uint64_t align;         /* _Alignof(type) */
	uint64_t pages;         /* whole pages it occupies */
	uint64_t fingerprint;   /* 0 with DSU_DESC_HASH_TYPE_NAME */
	const void *init;       /* initial bytes */
	const void *migration;  /* NULL in C */
};

#define DSU__PAGES(bytes) (((bytes) + DSU_PAGE_SIZE - 1) / DSU_PAGE_SIZE)

/*
 * DSU_GLOBAL(type, name, init...): defines the global `type name = init`, shared under the
 * variable name "name". The initialiser may be a brace list. Other files declare it with
 * DSU_GLOBAL_EXTERN(type, name).
 */
#define DSU_GLOBAL(type, name, ...) DSU_GLOBAL_NAMED(type, name, #name, __VA_ARGS__)

/* As DSU_GLOBAL, with an explicit variable name (a string literal, 1..127 printable ASCII). */
#define DSU_GLOBAL_NAMED(type, name, varname, ...)                                          \
	union dsu__u_##name {                                                                 \
		type value;                                                                   \
		unsigned char dsu__pages[DSU__PAGES(sizeof(type)) * DSU_PAGE_SIZE];          \
	};                                                                                    \
	__attribute__((section("dsu_globals"), aligned(DSU_PAGE_SIZE), used))                 \
	union dsu__u_##name dsu__g_##name = { .value = __VA_ARGS__ };                         \
	extern type name __attribute__((alias("dsu__g_" #name)));                             \
	__attribute__((section("linkme_DSU_GLOBALS"), aligned(8), used))                      \
	const struct dsu_global_desc dsu__d_##name = {                                        \
		DSU_DESC_MAGIC, DSU_DESC_HASH_TYPE_NAME, varname, #type, &dsu__g_##name,      \
		sizeof(type), _Alignof(type), DSU__PAGES(sizeof(type)), 0, &dsu__g_##name, 0  \
	}

/* Declares a global defined with DSU_GLOBAL in another file. */
#define DSU_GLOBAL_EXTERN(type, name) extern type name

/* dsu_attach flags. */
#define DSU_MUST_EXIST  (1u << 0) /* fail with DSU_ENOSEGMENT if the segment is missing */
#define DSU_MUST_CREATE (1u << 1) /* fail with DSU_EEXISTS if the segment exists */
#define DSU_PREFAULT    (1u << 2) /* map every page at attach instead of on first touch */

/* Error codes: dsu_attach and friends return these negative numbers. */
enum dsu_error {
	DSU_OK = 0,
	DSU_ENOMODULE = -1,  /* /dev/dsu missing: load the module */
	DSU_EACCESS = -2,    /* permission denied on the segment */
	DSU_ENOSEGMENT = -3, /* segment does not exist (DSU_MUST_EXIST) */
	DSU_EEXISTS = -4,    /* segment exists (DSU_MUST_CREATE) */
	DSU_ECONFLICT = -5,  /* a variable changed type or size; nothing was changed */
	DSU_ELIMIT = -6,     /* a module limit was reached */
	DSU_ENOMEM = -7,     /* out of memory */
	DSU_EINVAL = -8,     /* bad segment name, label, flags or mode */
	DSU_EDESTROYED = -9, /* the segment was destroyed */
	DSU_EALREADY = -10,  /* dsu_attach already succeeded in this process */
	DSU_ELAYOUT = -11,   /* the globals do not tile the dsu_globals section */
	DSU_EKERNEL = -12,   /* other error from the module */
	DSU_ENOTATTACHED = -13, /* no successful dsu_attach yet */
};

/*
 * Attaches this program's globals to `segment` as version `version` (a label, 1..31
 * printable ASCII bytes). `flags`: DSU_MUST_EXIST, DSU_MUST_CREATE, DSU_PREFAULT. `mode`:
 * permission bits of a segment this call creates (0: 0600). Returns 0 or a negative
 * enum dsu_error; dsu_last_error() then says what happened and what to do.
 * Call it before other threads touch the globals. It succeeds once per process.
 */
int dsu_attach(const char *segment, const char *version, unsigned int flags, unsigned int mode);

/* The message of the last failure in this thread ("" if none). Valid until the next call. */
const char *dsu_last_error(void);

/* A fixed description of an error code. */
const char *dsu_strerror(int code);

/* The version's pollable fd (POLLIN when a newer version bound), or DSU_ENOTATTACHED. */
int dsu_fd(void);

/* The version id the kernel assigned, or DSU_ENOTATTACHED. */
int64_t dsu_version_id(void);

/* 1 if a newer version has bound since this one (non-blocking), 0 if not, < 0 on error. */
int dsu_newer_version(void);

/* Waits up to timeout_ms (< 0: forever) for a newer version: 1 if one bound, 0 on
 * timeout, < 0 on error. */
int dsu_wait_for_newer(int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* DSU_LIBDSU_H */
