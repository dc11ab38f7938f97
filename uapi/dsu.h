/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * dsu: shared data segments for multi-version dynamic software update.
 *
 * This header is the single source of truth for the /dev/dsu interface. The Rust
 * bindings in uapi/src/bindings.rs are generated from it (scripts/uapi-bindgen.sh) and
 * used by both the kernel module and the userspace crate.
 *
 * Model:
 *   - A *segment* is a named set of physical pages with a *directory* of the global
 *     variables stored in them. It is owned by a uid/gid and has a permission mode.
 *     Names are scoped by IPC namespace, like SysV and POSIX shared memory: every ioctl
 *     that names a segment, and LIST_SEGMENTS, sees only the caller's IPC namespace.
 *   - An open file of /dev/dsu is a *handle*. DSU_IOC_ATTACH connects it to a segment,
 *     DSU_IOC_RESOLVE finds or creates variables, DSU_IOC_BIND turns the handle into a
 *     *version* with a page map, and mmap() of the handle installs that map.
 *   - Other handles attached to the segment are told when a version binds or ends:
 *     poll() reports POLLIN and read() returns struct dsu_event records.
 *
 * Every struct starts with a __u32 size that the caller sets to sizeof(struct) as it
 * knows it. The kernel accepts a smaller size that covers the first version of the
 * struct (fields added later read as zero), and a larger one whose unknown tail is all
 * zero (else E2BIG). Output is written only up to the caller's size. Fields are fixed
 * width with explicit padding; padding and reserved fields must be zero.
 *
 * ioctl commands are dispatched on the whole number: type, number, direction and size
 * bits. The module accepts exactly the commands below, one per struct size it knows (ATTACH
 * and BIND have two: the current one and API version 1's DSU_IOC_ATTACH_VER1 and
 * DSU_IOC_BIND_VER1); any other number is
 * ENOTTY. A struct that grows gets a new command for its new size, and the old one stays.
 * Within a command, the struct's size field still governs how much is copied. 32-bit
 * processes use the same commands and structs (every field is fixed-width and padded
 * explicitly, so the layouts are identical); only the argument pointer is converted.
 *
 * Fields marked "out" only, padding and reserved fields, and fields a command does not use
 * (dsu_list.segment for LIST_SEGMENTS) must be zero on input, else EINVAL (for a
 * RESOLVE entry: DSU_VAR_INVALID), so that they can be given a meaning later.
 */
#ifndef _UAPI_LINUX_DSU_H
#define _UAPI_LINUX_DSU_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define DSU_API_VERSION 1

/* Name lengths include the terminating NUL. */
#define DSU_SEGMENT_NAME_MAX 64  /* segment names: 1..63 bytes of [A-Za-z0-9._-] */
#define DSU_VARIABLE_NAME_MAX 128 /* variable names: 1..127 printable ASCII bytes */
#define DSU_LABEL_MAX 32         /* version labels: 1..31 printable ASCII bytes */

/* Mode given to a new segment when struct dsu_attach.mode is 0. */
#define DSU_DEFAULT_MODE 0600

/* ---------------------------------------------------------------------------------- */
/* DSU_IOC_ATTACH: open or create a segment and connect this handle to it.            */

/* Fail with EEXIST if the segment exists. */
#define DSU_ATTACH_MUST_CREATE (1U << 0)
/* Fail with ENOENT if the segment does not exist. */
#define DSU_ATTACH_MUST_EXIST (1U << 1)
/*
 * An existing segment may be owned by `owner` (a uid of the caller's user namespace)
 * rather than by the caller. Without this flag, ATTACH of an existing segment whose owner
 * is not the caller's fsuid fails with EPERM, whatever the mode and the caller's
 * capabilities: a name another user created first is never joined by accident. With it, a
 * segment owned by anyone else than `owner` is EPERM, and a missing segment is created
 * only if `owner` is the caller's fsuid (else ENOENT).
 */
#define DSU_ATTACH_OWNER (1U << 2)

/* sizeof(struct dsu_attach) in API version 1, before owner and event_size. */
#define DSU_ATTACH_SIZE_VER1 80

struct dsu_attach {
	__u32 size;     /* in: sizeof(struct dsu_attach) */
	__u32 flags;    /* in: DSU_ATTACH_* */
	__u32 mode;     /* in: permission bits (<= 0777) for a new segment; 0: 0600 */
	__u32 created;  /* out: 1 if this call created the segment, else 0 */
	char name[DSU_SEGMENT_NAME_MAX]; /* in: NUL-terminated segment name */
	/* Added after API version 1 (a size of DSU_ATTACH_SIZE_VER1 reads them as 0): */
	__u32 owner;      /* in, with DSU_ATTACH_OWNER: the expected owner's uid; else 0 */
	__u32 event_size; /* in: bytes per record that read() returns (see struct dsu_event);
			   * 0: DSU_EVENT_SIZE_VER1 */
};

/* ---------------------------------------------------------------------------------- */
/* DSU_IOC_RESOLVE: find or create a batch of variables in the attached segment.      */
/*
 * All-or-nothing: when any entry conflicts, nothing is created, every entry's status
 * tells what was found and the call fails with EEXIST. Otherwise every entry gets
 * DSU_VAR_COMMON or DSU_VAR_ADDED with its pages in first_page and page_count.
 */

/* The entry may coexist with entries of the same name but another size or
 * fingerprint: a migrated variable. Without it such an entry is a conflict. */
#define DSU_VAR_MIGRATE (1U << 0)

#define DSU_VAR_PENDING 0        /* not decided (the batch failed before this entry) */
#define DSU_VAR_COMMON 1         /* found with equal size and fingerprint */
#define DSU_VAR_ADDED 2          /* created by this call, holding the initial bytes */
#define DSU_VAR_CONFLICT_SIZE 3  /* the name exists with another size */
#define DSU_VAR_CONFLICT_TYPE 4  /* the name exists with the same size, another fingerprint */
#define DSU_VAR_INVALID 5        /* this entry is malformed (the call fails with EINVAL) */

/* sizeof(struct dsu_var) in API version 1, before type_desc: the smallest var_size accepted. */
#define DSU_VAR_SIZE_VER1 200

/* Most bytes of a type description (struct dsu_var.type_desc). */
#define DSU_TYPE_DESC_MAX 4096

struct dsu_var {
	__u64 size;          /* in: bytes, >= 1 */
	__u64 align;         /* in: power of two, <= the page size */
	__u64 fingerprint;   /* in: 64-bit type fingerprint */
	__u64 init;          /* in: user pointer to `size` initial bytes; 0: all zero */
	__u32 flags;         /* in: DSU_VAR_* flags */
	__u32 status;        /* out: DSU_VAR_* status */
	__u64 first_page;    /* out: index of its first page in the segment */
	__u64 page_count;    /* out: pages it occupies */
	__u64 found_size;    /* out, on conflict: size in the directory */
	__u64 found_fingerprint; /* out, on conflict: fingerprint in the directory */
	char name[DSU_VARIABLE_NAME_MAX]; /* in: NUL-terminated variable name */
	/*
	 * Added after API version 1 (a var_size of DSU_VAR_SIZE_VER1 leaves them zero).
	 * type_desc: user pointer to type_desc_len bytes describing the type (the text format
	 * of docs/DESIGN.md: printable ASCII and newlines), stored with an entry this call
	 * creates and read back with DSU_READ_TYPE_DESC; 0 with type_desc_len 0: none.
	 * Longer than DSU_TYPE_DESC_MAX: E2BIG; other bytes, or a pointer without a length
	 * (or a length without a pointer): the entry is DSU_VAR_INVALID (EINVAL).
	 */
	__u64 type_desc;     /* in: user pointer to the type description, or 0 */
	__u32 type_desc_len; /* in: its length in bytes, 0..DSU_TYPE_DESC_MAX */
	__u32 __pad;         /* in: 0 */
};

struct dsu_resolve {
	__u32 size;      /* in: sizeof(struct dsu_resolve) */
	__u32 var_size;  /* in: sizeof(struct dsu_var) as the caller knows it */
	__u32 count;     /* in: number of entries, 1..max_variables */
	__u32 flags;     /* in: 0 */
	__u64 vars;      /* in: user pointer to `count` entries of `var_size` bytes */
	__u32 added;     /* out: entries created */
	__u32 conflicts; /* out: entries that conflict */
};

/* ---------------------------------------------------------------------------------- */
/* DSU_IOC_BIND: make this handle a version of its segment.                           */
/*
 * The map says which segment page backs each page of the version's global section. It
 * is given in one of two forms; exactly one of `pages` and `extents` is non-zero (else
 * EINVAL):
 *   - per page: pages[i] is the segment page that backs page i of the section;
 *   - extents: the section is the concatenation of the extents, in order: extent k covers
 *     segment pages first_page..first_page + page_count - 1. BIND then costs O(extents),
 *     not O(pages). extent_count is 1..max_segment_pages (0: EINVAL, more: E2BIG); every
 *     extent has page_count >= 1 and lies inside the segment (EINVAL, also for a u64
 *     overflow), and the page counts sum to `page_count` (else EINVAL).
 * mmap() of the handle must then be MAP_SHARED, offset 0 and exactly page_count pages long.
 *
 * `extents` and `extent_count` were added after API version 1: a caller whose `size` is
 * the first version's (64 bytes) passes the per-page form.
 */

/* sizeof(struct dsu_bind) in API version 1, before extents: the smallest size accepted. */
#define DSU_BIND_SIZE_VER1 64

/* Install every page-table entry at mmap() with vm_insert_pages instead of on fault. */
#define DSU_BIND_PREFAULT (1U << 0)
/*
 * Bind as a *candidate*: the version is not ready until DSU_IOC_READY on this handle.
 * Other handles get DSU_EVENT_VERSION_BOUND now and DSU_EVENT_VERSION_READY only then; if
 * the handle is released before (the fd closed and every mapping gone), they get
 * DSU_EVENT_VERSION_ABORTED and the variables it added that no ready version ever used and
 * nothing else maps or resolved are removed, their pages freed and uncharged. Without this
 * flag BIND is BIND and READY at once (API version 1's behaviour).
 */
#define DSU_BIND_CANDIDATE (1U << 1)

struct dsu_extent {
	__u64 first_page;  /* in: first segment page */
	__u64 page_count;  /* in: pages, >= 1 */
};

struct dsu_bind {
	__u32 size;        /* in: sizeof(struct dsu_bind) */
	__u32 flags;       /* in: DSU_BIND_* */
	__u64 page_count;  /* in: pages in the map, 1..max_segment_pages */
	__u64 pages;       /* in: user pointer to page_count __u64 segment page indexes, or 0 */
	__u64 version_id;  /* out: id of the new version, unique in the segment */
	char label[DSU_LABEL_MAX]; /* in: NUL-terminated version label, e.g. "2.1.0" */
	__u64 extents;     /* in: user pointer to extent_count struct dsu_extent, or 0 */
	__u64 extent_count; /* in: entries at extents (0 with pages) */
};

/* ---------------------------------------------------------------------------------- */
/* read(): events for handles attached to a segment.                                  */
/*
 * read() returns whole records of the size the handle's ATTACH asked for in
 * dsu_attach.event_size (DSU_EVENT_SIZE_VER1 for 0 or an older struct dsu_attach), at least
 * DSU_EVENT_SIZE_VER1 and at most a page (else ATTACH fails with EINVAL / E2BIG). Each
 * record is the kernel's struct dsu_event cut to that size, or zero-filled past it; its
 * `size` field says how many of its bytes the kernel filled. A buffer smaller than one
 * record is EINVAL. `pid` is the binder's process id in the reader's pid namespace at the
 * time of the read (0 if it is not visible there).
 */

/* sizeof(struct dsu_event) in API version 1: the smallest record size. */
#define DSU_EVENT_SIZE_VER1 64

/*
 * Every version gets BOUND at its BIND, READY when it commits (at BIND without
 * DSU_BIND_CANDIDATE, else at DSU_IOC_READY), and ENDED when its fd and mappings are all
 * gone; a version that ends before READY gets ABORTED just before its ENDED. A version that
 * retires when a newer one arrives must wait for READY (a candidate may still abort);
 * BOUND is for observers (and API version 1 readers, which know only BOUND and ENDED).
 */
#define DSU_EVENT_VERSION_BOUND 1 /* a version bound to the segment (a newer one) */
#define DSU_EVENT_VERSION_ENDED 2 /* a version's fd and mappings are all gone */
#define DSU_EVENT_VERSION_READY 3 /* a version declared itself ready (committed) */
#define DSU_EVENT_VERSION_ABORTED 4 /* a candidate ended before READY (ENDED follows) */

struct dsu_event {
	__u32 size;        /* sizeof(struct dsu_event) */
	__u32 kind;        /* DSU_EVENT_* */
	__u64 version_id;  /* the version the event is about */
	__s32 pid;         /* its process id (the binder's thread group) in the reader's pid
			    * namespace, 0 if not visible there */
	__u32 lost;        /* events dropped before this one: the queue was full */
	__u64 time_ns;     /* CLOCK_REALTIME nanoseconds of the event */
	char label[DSU_LABEL_MAX];
};

/* ---------------------------------------------------------------------------------- */
/* Introspection: DSU_IOC_LIST_SEGMENTS, DSU_IOC_LIST_VARIABLES, DSU_IOC_LIST_VERSIONS. */
/*
 * Paged: the kernel writes at most `count` records starting at record `start`, sets
 * `count` to the number written and `total` to the number that exist. Records are
 * `record_size` bytes apart (sizeof the matching *_info struct as the caller knows it).
 */

#define DSU_LIST_MAX 1024 /* most records one call returns */

struct dsu_list {
	__u32 size;        /* in: sizeof(struct dsu_list) */
	__u32 record_size; /* in: sizeof(struct dsu_*_info) as the caller knows it */
	__u32 start;       /* in: first record */
	__u32 count;       /* in: capacity (<= DSU_LIST_MAX); out: records written */
	__u64 records;     /* in: user pointer to count * record_size bytes */
	__u32 total;       /* out: records that exist */
	__u32 __pad;
	char segment[DSU_SEGMENT_NAME_MAX]; /* in: segment (all zero for LIST_SEGMENTS) */
};

#define DSU_SEGMENT_DESTROYED (1U << 0) /* flag in dsu_segment_info.flags */

struct dsu_segment_info {
	__u32 uid;         /* owner, in the caller's user namespace (overflowuid if unmapped) */
	__u32 gid;         /* in the caller's user namespace (overflowgid if unmapped) */
	__u32 mode;        /* permission bits */
	__u32 flags;       /* DSU_SEGMENT_* */
	__u64 pages;       /* pages allocated */
	__u64 variables;   /* directory entries */
	__u64 versions;    /* live versions */
	__u64 handles;     /* open handles attached */
	__u64 created_ns;  /* CLOCK_REALTIME */
	char name[DSU_SEGMENT_NAME_MAX];
	/* Added after API version 1 (records of DSU_SEGMENT_INFO_SIZE_VER1 bytes stop here): */
	__u64 heap_base;    /* the shared heap's address (see DSU_IOC_HEAP), 0 if none */
	__u64 heap_reserve; /* bytes of its address window */
	__u64 heap_size;    /* bytes backed by pages now */
};

/* sizeof(struct dsu_segment_info) in API version 1: the smallest record_size accepted. */
#define DSU_SEGMENT_INFO_SIZE_VER1 120

struct dsu_variable_info {
	__u64 size;
	__u64 align;
	__u64 fingerprint;
	__u64 first_page;
	__u64 page_count;
	__u64 created_ns;   /* CLOCK_REALTIME */
	__u64 created_by;   /* id of the version that created it; 0 until its handle binds */
	char created_label[DSU_LABEL_MAX]; /* that version's label; "" until then */
	char name[DSU_VARIABLE_NAME_MAX];
};

#define DSU_VERSION_READY (1U << 0) /* flag in dsu_version_info.flags: ready, else a candidate */

struct dsu_version_info {
	__u64 id;
	__s32 pid;          /* the binder's process id in the caller's pid namespace, or 0 */
	__u32 flags;        /* DSU_VERSION_* (ended versions are not listed) */
	__u64 pages;        /* pages in its map */
	__u64 mappings;     /* live VMAs (fork and partial munmap count) */
	__u64 bound_ns;     /* CLOCK_REALTIME of the bind */
	char label[DSU_LABEL_MAX];
};

/* ---------------------------------------------------------------------------------- */
/* DSU_IOC_READ_VAR: copy a variable's current bytes (dump, migration snapshots).     */

/* Read the newest entry of that name whatever its fingerprint. */
#define DSU_READ_ANY_FINGERPRINT (1U << 0)
/*
 * Read the entry's type description (given to RESOLVE in dsu_var.type_desc) instead of
 * its value: offset and length address the description, whose length is at most
 * DSU_TYPE_DESC_MAX (an entry without one reads as 0 bytes).
 */
#define DSU_READ_TYPE_DESC (1U << 1)

struct dsu_read_var {
	__u32 size;        /* in: sizeof(struct dsu_read_var) */
	__u32 flags;       /* in: DSU_READ_* */
	__u64 fingerprint; /* in: the entry to read */
	__u64 offset;      /* in: first byte */
	__u64 length;      /* in: bytes to copy; out: bytes copied (to the variable's end) */
	__u64 buf;         /* in: user pointer to length bytes */
	__u64 var_size;    /* out: the variable's size */
	__u64 var_fingerprint; /* out: the variable's fingerprint */
	char segment[DSU_SEGMENT_NAME_MAX];
	char name[DSU_VARIABLE_NAME_MAX];
};

/* ---------------------------------------------------------------------------------- */
/* DSU_IOC_DESTROY: remove a segment's name; its pages go with the last fd and mapping. */

struct dsu_destroy {
	__u32 size;        /* in: sizeof(struct dsu_destroy) */
	__u32 flags;       /* in: 0 */
	char name[DSU_SEGMENT_NAME_MAX];
};

/* DSU_IOC_SETATTR: change a segment's mode, owner or group without destroying it.     */
/*
 * Allowed to the segment's owner and to CAP_SYS_ADMIN, else EPERM; as with chown(2),
 * only CAP_SYS_ADMIN may change the owner, and the owner may set the group only to one
 * it is in (EPERM). flags selects the
 * fields to apply: at least one, no unknown bit, and the fields not selected (and __pad)
 * zero, else EINVAL; mode above 0777 is EINVAL; uid and gid are in the caller's user
 * namespace, and one with no mapping there is EINVAL. Permissions are checked at every
 * operation, so the change applies to the next operation of every handle; mappings that
 * exist stay.
 */
#define DSU_SETATTR_MODE (1U << 0)
#define DSU_SETATTR_UID (1U << 1)
#define DSU_SETATTR_GID (1U << 2)

struct dsu_setattr {
	__u32 size;        /* in: sizeof(struct dsu_setattr) */
	__u32 flags;       /* in: DSU_SETATTR_* */
	__u32 mode;        /* in: permission bits (DSU_SETATTR_MODE) */
	__u32 uid;         /* in: new owner (DSU_SETATTR_UID) */
	__u32 gid;         /* in: new group (DSU_SETATTR_GID) */
	__u32 __pad;       /* in: 0 */
	char name[DSU_SEGMENT_NAME_MAX];
};

/* ---------------------------------------------------------------------------------- */
/* The shared heap: DSU_IOC_HEAP, DSU_IOC_HEAP_GROW, DSU_IOC_HEAP_DISCARD, READ_HEAP.   */
/*
 * A segment may have one heap: a window of `reserve` bytes of address space at `base`,
 * the same address in every process, so that heap objects hold ordinary pointers. Its
 * first `size` bytes are backed by pages (zeroed when first grown); `size` only grows.
 * mmap() of an Attached or Bound handle at offset DSU_HEAP_MMAP_OFFSET, MAP_SHARED, at
 * exactly `base` and `reserve` bytes long (else EINVAL; no heap: ENOENT; needs read and
 * write permission: EACCES) maps the window. A touch at or past `size` is SIGBUS; growth
 * by any process is seen by every mapping at once, with no remap. The pages are charged
 * like segment pages (memcg at growth, max_user_pages and RLIMIT_MEMLOCK) and live until
 * the segment is freed: after its last handle and its last mapping.
 */
#define DSU_HEAP_MMAP_OFFSET (1ULL << 40)
/*
 * mmap() at DSU_VIEW_MMAP_OFFSET + first_page * page size, MAP_SHARED, page_count pages
 * long, of an Attached or Bound handle maps segment pages first_page..first_page +
 * page_count - 1 read-write (needs read and write permission) without making the handle
 * a version: a new version reads an old version's variable in place (migration).
 */
#define DSU_VIEW_MMAP_OFFSET (1ULL << 41)

/* Out, in dsu_heap.flags: this call created the heap. */
#define DSU_HEAP_CREATED (1U << 0)

/*
 * DSU_IOC_HEAP (Attached or Bound handle; read and write permission): if the segment
 * has a heap, returns it (base, reserve, heap_size; flags 0), whatever base and reserve
 * say. Otherwise, with base and reserve non-zero, page-aligned, reserve at most
 * max_heap_pages pages (E2BIG) and [base, base + reserve) a user address range (EINVAL),
 * creates it with nothing backed (flags DSU_HEAP_CREATED); with both zero: ENOENT; one
 * zero: EINVAL. A destroyed segment gets no new heap (EIDRM).
 */
struct dsu_heap {
	__u32 size;      /* in: sizeof(struct dsu_heap) */
	__u32 flags;     /* out: DSU_HEAP_CREATED; in: 0 */
	__u64 base;      /* in/out: the window's address */
	__u64 reserve;   /* in/out: the window's length in bytes */
	__u64 heap_size; /* out: bytes backed; in: 0 */
};

/*
 * DSU_IOC_HEAP_GROW (Attached or Bound handle; read and write permission): backs the
 * heap up to at least min_size bytes (rounded up to pages), allocating and charging the
 * new pages now, and returns the size in heap_size (never smaller than before: a call
 * asking for less than the current size changes nothing, so racing growers are fine).
 * Past the reserve, max_heap_pages, max_user_pages, RLIMIT_MEMLOCK or the memory
 * cgroup's memory.max: ENOMEM, nothing changed. No heap: ENOENT.
 */
struct dsu_heap_grow {
	__u32 size;      /* in: sizeof(struct dsu_heap_grow) */
	__u32 flags;     /* in: 0 */
	__u64 min_size;  /* in: bytes wanted, >= 1 */
	__u64 heap_size; /* out: bytes backed after the call; in: 0 */
};

/*
 * DSU_IOC_HEAP_DISCARD (Attached or Bound handle; read and write permission): returns the
 * pages of [offset, offset + length) to the system (offset and length page-aligned,
 * length >= 1, inside heap_size: else EINVAL). The range reads as zeros afterwards in every
 * process, and a touch allocates a zeroed page again at fault. The per-user charges stay:
 * the size does not shrink.
 */
struct dsu_heap_discard {
	__u32 size;      /* in: sizeof(struct dsu_heap_discard) */
	__u32 flags;     /* in: 0 */
	__u64 offset;    /* in: bytes from base */
	__u64 length;    /* in: bytes */
};

/*
 * DSU_IOC_READ_HEAP (any handle; read permission on the named segment): copies heap bytes
 * at offset (address - base) into buf, up to the heap's size (offset past it: EINVAL; no
 * heap: ENOENT). Pages discarded or never touched read as zeros.
 */
struct dsu_read_heap {
	__u32 size;      /* in: sizeof(struct dsu_read_heap) */
	__u32 flags;     /* in: 0 */
	__u64 offset;    /* in: first byte, from base */
	__u64 length;    /* in: bytes to copy; out: bytes copied */
	__u64 buf;       /* in: user pointer to length bytes */
	char segment[DSU_SEGMENT_NAME_MAX];
};

/* ---------------------------------------------------------------------------------- */
/* DSU_IOC_READY: commit this handle's version (no argument; the third is ignored).     */
/*
 * A candidate (bound with DSU_BIND_CANDIDATE) becomes ready: the segment's generation is
 * incremented, every variable the version maps records that generation as its last use,
 * and the other handles get DSU_EVENT_VERSION_READY. Idempotent: READY on a ready version
 * returns 0 and changes nothing. EBADFD unless the handle is bound.
 */

/* ---------------------------------------------------------------------------------- */
/* DSU_IOC_GC: list or reclaim variables nothing uses any more.                        */
/*
 * A variable is reclaimable when no live version maps it (mappings that outlive the fd
 * included), no attached handle has RESOLVEd it and not yet bound (or still holds it after
 * a RESOLVE on a bound handle), and no ready version has used it for at least `min_age`
 * generations: generation - (the generation of the last READY of a version that mapped
 * it, or the one at its creation) >= min_age. The segment's generation counts READYs. The
 * decision and the removal happen under the segment lock, so a concurrent RESOLVE or BIND
 * either sees the variable removed (and adds a new one) or keeps it.
 *
 * Without DSU_GC_DRY_RUN the variables are removed from the directory and their pages
 * freed and uncharged (needs read and write permission); with it nothing changes (read
 * permission). Either way the first `count` of them are written to `records` as
 * struct dsu_variable_info (record_size apart), `count` is set to the number written and
 * `total` and `pages` to all of them. Segment page indexes are not reused: LIST_VARIABLES
 * keeps showing the remaining variables' first_page.
 */
#define DSU_GC_DRY_RUN (1U << 0) /* only list */
#define DSU_GC_MIN_AGE (1U << 1) /* min_age is given; else the module parameter gc_min_age */

struct dsu_gc {
	__u32 size;        /* in: sizeof(struct dsu_gc) */
	__u32 flags;       /* in: DSU_GC_* */
	__u32 min_age;     /* in, with DSU_GC_MIN_AGE: generations; else 0 */
	__u32 record_size; /* in: sizeof(struct dsu_variable_info) as the caller knows it */
	__u64 records;     /* in: user pointer to count * record_size bytes (0 with count 0) */
	__u32 count;       /* in: capacity (<= DSU_LIST_MAX); out: records written */
	__u32 total;       /* out: variables reclaimed (or reclaimable, with DSU_GC_DRY_RUN) */
	__u64 pages;       /* out: their pages */
	__u64 generation;  /* out: the segment's generation (READYs so far) */
	char segment[DSU_SEGMENT_NAME_MAX]; /* in: segment name */
};

/* ---------------------------------------------------------------------------------- */
/* Snapshots: DSU_IOC_SNAPSHOT and the snapshot fd.                                    */
/*
 * DSU_IOC_SNAPSHOT (any handle; read permission on the named segment) takes a
 * point-in-time image of a live segment and returns it as a new file descriptor in `fd`
 * (O_RDONLY | O_CLOEXEC). Every byte of the image (every variable's pages, the heap's
 * first heap_size bytes) is as it was at one instant, the instant the call returns, as a
 * crash at that instant would have left it; the segment's versions keep running while the
 * image is read (pages written after the instant are copied on their first write, see
 * docs/DESIGN.md). The out fields describe the segment at that instant. One snapshot per
 * segment at a time: another one open is EBUSY. The copies are charged to the caller
 * (memcg, max_user_pages); if they cannot be had, the call fails with ENOMEM and nothing
 * changes. flags must be 0. Closing the fd ends the snapshot and frees its copies.
 *
 * The snapshot fd:
 *   - pread(): image bytes. Segment page i (0 <= i < pages) is at offset i * page size,
 *     heap byte x (0 <= x < heap_size) at DSU_HEAP_MMAP_OFFSET + x. Pages that belong to
 *     no variable, discarded heap pages and heap pages never touched read as zeros. A read
 *     that runs past the end of its range is short; one that starts at the end of a range
 *     returns 0; one that starts outside both ranges is EINVAL. Pages may be read in any
 *     order and more than once.
 *   - ioctl DSU_IOC_LIST_VARIABLES (dsu_list.segment all zero): the image's directory, as
 *     struct dsu_variable_info records whose first_page/page_count address the image.
 *   - ioctl DSU_IOC_READ_VAR (dsu_read_var.segment all zero): a variable's bytes in the
 *     image, or with DSU_READ_TYPE_DESC its type description.
 *   - any other ioctl: ENOTTY; mmap(): EINVAL; write(): EBADF (the fd is read-only).
 */
struct dsu_snapshot {
	__u32 size;        /* in: sizeof(struct dsu_snapshot) */
	__u32 flags;       /* in: 0 */
	__s32 fd;          /* out: the snapshot fd */
	__u32 mode;        /* out: the segment's permission bits */
	__u32 uid;         /* out: owner, in the caller's user namespace */
	__u32 gid;         /* out: group, in the caller's user namespace */
	__u64 pages;       /* out: segment pages in the image (page indexes 0..pages-1) */
	__u64 variables;   /* out: directory entries in the image */
	__u64 heap_base;   /* out: the heap's address, 0 if none */
	__u64 heap_reserve; /* out: bytes of its window */
	__u64 heap_size;   /* out: heap bytes in the image */
	__u64 generation;  /* out: the segment's generation (READYs so far) */
	__u64 taken_ns;    /* out: CLOCK_REALTIME of the instant */
	char segment[DSU_SEGMENT_NAME_MAX]; /* in: segment name */
};

/* ---------------------------------------------------------------------------------- */
/* Restore: DSU_IOC_RESTORE, RESTORE_VAR, RESTORE_HEAP, RESTORE_COMMIT.                */
/*
 * A fresh (never attached) handle rebuilds a segment from an image before any version
 * attaches:
 *   1. DSU_IOC_RESTORE names it: the handle becomes a *restoring* handle of a new segment
 *      that nobody else can see yet, owned by the caller (as ATTACH creates one) with
 *      `mode` (<= 0777, else EINVAL). The name taken already in the caller's IPC namespace:
 *      EEXIST, nothing changes. A handle not fresh: EBADFD.
 *   2. DSU_IOC_RESTORE_VAR adds one directory entry with its bytes (charged like a RESOLVE
 *      that adds it; past a limit: ENOMEM or ENOSPC as RESOLVE answers). An entry of the
 *      same name and fingerprint already restored: EEXIST. Other validation is RESOLVE's
 *      (names, sizes, align, type description) with EINVAL.
 *   3. DSU_IOC_HEAP on the restoring handle creates the heap at the image's base and
 *      reserve, DSU_IOC_HEAP_GROW backs it to the image's heap_size, and
 *      DSU_IOC_RESTORE_HEAP writes heap bytes (ranges never written stay zero).
 *   4. DSU_IOC_RESTORE_COMMIT (no argument) publishes the segment under its name; the
 *      handle is then an attached handle of it. If the name was taken meanwhile: EEXIST,
 *      and the handle stays restoring (close it to drop everything).
 * Closing a restoring handle before COMMIT frees everything it restored: a restore that
 * fails half-way creates nothing. Other ioctls on a restoring handle: EBADFD.
 */
struct dsu_restore {
	__u32 size;        /* in: sizeof(struct dsu_restore) */
	__u32 flags;       /* in: 0 */
	__u32 mode;        /* in: permission bits of the new segment */
	__u32 __pad;       /* in: 0 */
	char segment[DSU_SEGMENT_NAME_MAX]; /* in: the name to restore under */
};

struct dsu_restore_var {
	__u32 size;          /* in: sizeof(struct dsu_restore_var) */
	__u32 flags;         /* in: 0 */
	__u64 var_size;      /* in: bytes, >= 1 */
	__u64 align;         /* in: power of two, <= the page size */
	__u64 fingerprint;   /* in: 64-bit type fingerprint */
	__u64 value;         /* in: user pointer to var_size bytes; 0: all zero */
	__u64 type_desc;     /* in: user pointer to the type description, or 0 */
	__u32 type_desc_len; /* in: its length, 0..DSU_TYPE_DESC_MAX */
	__u32 __pad;         /* in: 0 */
	__u64 created_ns;    /* in: CLOCK_REALTIME of its creation, as the image recorded it */
	__u64 first_page;    /* out: its first page in the new segment */
	__u64 page_count;    /* out: its pages */
	char created_label[DSU_LABEL_MAX]; /* in: label of the version that created it, or "" */
	char name[DSU_VARIABLE_NAME_MAX];  /* in: NUL-terminated variable name */
};

struct dsu_restore_heap {
	__u32 size;      /* in: sizeof(struct dsu_restore_heap) */
	__u32 flags;     /* in: 0 */
	__u64 offset;    /* in: first byte, from base */
	__u64 length;    /* in: bytes, >= 1; offset + length <= heap_size (else EINVAL) */
	__u64 buf;       /* in: user pointer to length bytes */
};

/* ---------------------------------------------------------------------------------- */
/* Lock owners: DSU_IOC_LOCK_TOKEN and DSU_IOC_LOCK_OWNER.                             */
/*
 * A robust lock in shared memory (dsu::sync::Mutex) records its holder's *lock token*
 * beside the holder's thread id. The kernel marks the lock FUTEX_OWNER_DIED when the
 * holder dies, but not when the lock word is copied somewhere its holder never was: into a
 * snapshot that is restored as a new segment, or across a module reload or a reboot. A
 * waiter on such a copy asks the module whether the recorded holder can still release it.
 *
 * DSU_IOC_LOCK_TOKEN (any /dev/dsu file, any state): returns the calling process's lock
 * token, issued on its first call and the same for every thread of the process until it
 * exits or execs (a child of fork gets its own). A token has DSU_LOCK_TOKEN_ISSUED set;
 * it names this module instance (a reload issues tokens no earlier one did). The module
 * keeps one small record per live process that asked (charged to its memory cgroup);
 * past DSU_LOCK_TOKENS_MAX records: EAGAIN (the caller then holds locks with a token of
 * its own, without DSU_LOCK_TOKEN_ISSUED, which no waiter ever declares gone).
 *
 * DSU_IOC_LOCK_OWNER (any /dev/dsu file): `addr` is the address of a lock word in the
 * caller's MAP_SHARED mapping (a segment's variables, its heap, any shared file), `token`
 * the token its holder recorded. `state` says:
 *   - DSU_LOCK_OWNER_LIVE: the token's process is alive and maps the same memory (for a
 *     segment's variables: a mapping of the same segment), so it may release the lock;
 *   - DSU_LOCK_OWNER_GONE: it cannot: the token was issued by this module instance to a
 *     process that has exited or execed, or that maps no part of that memory (the lock
 *     word was copied: a restored snapshot), or by an earlier module instance;
 *   - DSU_LOCK_OWNER_UNKNOWN: the module cannot tell (a token it never issued).
 * `addr` not in a MAP_SHARED file mapping of the caller: EFAULT. flags must be 0.
 */
#define DSU_LOCK_TOKEN_ISSUED 0x8000000000000000ULL /* bit 63 */
#define DSU_LOCK_TOKENS_MAX 65536

struct dsu_lock_token {
	__u32 size;    /* in: sizeof(struct dsu_lock_token) */
	__u32 flags;   /* in: 0 */
	__u64 token;   /* out: the calling process's lock token */
};

#define DSU_LOCK_OWNER_LIVE 1
#define DSU_LOCK_OWNER_GONE 2
#define DSU_LOCK_OWNER_UNKNOWN 3

struct dsu_lock_owner {
	__u32 size;    /* in: sizeof(struct dsu_lock_owner) */
	__u32 flags;   /* in: 0 */
	__u64 token;   /* in: the token the lock's holder recorded */
	__u64 addr;    /* in: the lock word's address in the caller */
	__u32 state;   /* out: DSU_LOCK_OWNER_LIVE, _GONE or _UNKNOWN */
	__u32 __pad;   /* in: 0 */
};

/* ---------------------------------------------------------------------------------- */

#define DSU_IOC_MAGIC 0xD5

#define DSU_IOC_NR_ATTACH 0x01
#define DSU_IOC_NR_RESOLVE 0x02
#define DSU_IOC_NR_BIND 0x03
#define DSU_IOC_NR_LIST_SEGMENTS 0x04
#define DSU_IOC_NR_LIST_VARIABLES 0x05
#define DSU_IOC_NR_LIST_VERSIONS 0x06
#define DSU_IOC_NR_READ_VAR 0x07
#define DSU_IOC_NR_DESTROY 0x08
#define DSU_IOC_NR_SETATTR 0x09
#define DSU_IOC_NR_HEAP 0x0A
#define DSU_IOC_NR_HEAP_GROW 0x0B
#define DSU_IOC_NR_HEAP_DISCARD 0x0C
#define DSU_IOC_NR_READ_HEAP 0x0D
#define DSU_IOC_NR_READY 0x10
#define DSU_IOC_NR_GC 0x11
#define DSU_IOC_NR_SNAPSHOT 0x18
#define DSU_IOC_NR_RESTORE 0x19
#define DSU_IOC_NR_RESTORE_VAR 0x1A
#define DSU_IOC_NR_RESTORE_HEAP 0x1B
#define DSU_IOC_NR_RESTORE_COMMIT 0x1C
#define DSU_IOC_NR_LOCK_TOKEN 0x1D
#define DSU_IOC_NR_LOCK_OWNER 0x1E

#define DSU_IOC_ATTACH _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_ATTACH, struct dsu_attach)
/* ATTACH as API version 1 encoded it: the 80-byte struct, without owner and event_size. */
#define DSU_IOC_ATTACH_VER1 \
	_IOC(_IOC_READ | _IOC_WRITE, DSU_IOC_MAGIC, DSU_IOC_NR_ATTACH, DSU_ATTACH_SIZE_VER1)
#define DSU_IOC_RESOLVE _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_RESOLVE, struct dsu_resolve)
#define DSU_IOC_BIND _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_BIND, struct dsu_bind)
/* BIND as API version 1 encoded it: the 64-byte struct, without extents. */
#define DSU_IOC_BIND_VER1 \
	_IOC(_IOC_READ | _IOC_WRITE, DSU_IOC_MAGIC, DSU_IOC_NR_BIND, DSU_BIND_SIZE_VER1)
#define DSU_IOC_LIST_SEGMENTS _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_LIST_SEGMENTS, struct dsu_list)
#define DSU_IOC_LIST_VARIABLES _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_LIST_VARIABLES, struct dsu_list)
#define DSU_IOC_LIST_VERSIONS _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_LIST_VERSIONS, struct dsu_list)
#define DSU_IOC_READ_VAR _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_READ_VAR, struct dsu_read_var)
#define DSU_IOC_DESTROY _IOW(DSU_IOC_MAGIC, DSU_IOC_NR_DESTROY, struct dsu_destroy)
#define DSU_IOC_SETATTR _IOW(DSU_IOC_MAGIC, DSU_IOC_NR_SETATTR, struct dsu_setattr)
#define DSU_IOC_HEAP _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_HEAP, struct dsu_heap)
#define DSU_IOC_HEAP_GROW _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_HEAP_GROW, struct dsu_heap_grow)
#define DSU_IOC_HEAP_DISCARD _IOW(DSU_IOC_MAGIC, DSU_IOC_NR_HEAP_DISCARD, struct dsu_heap_discard)
#define DSU_IOC_READ_HEAP _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_READ_HEAP, struct dsu_read_heap)
#define DSU_IOC_READY _IO(DSU_IOC_MAGIC, DSU_IOC_NR_READY)
#define DSU_IOC_GC _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_GC, struct dsu_gc)
#define DSU_IOC_SNAPSHOT _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_SNAPSHOT, struct dsu_snapshot)
#define DSU_IOC_RESTORE _IOW(DSU_IOC_MAGIC, DSU_IOC_NR_RESTORE, struct dsu_restore)
#define DSU_IOC_RESTORE_VAR _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_RESTORE_VAR, struct dsu_restore_var)
#define DSU_IOC_RESTORE_HEAP _IOW(DSU_IOC_MAGIC, DSU_IOC_NR_RESTORE_HEAP, struct dsu_restore_heap)
#define DSU_IOC_RESTORE_COMMIT _IO(DSU_IOC_MAGIC, DSU_IOC_NR_RESTORE_COMMIT)
#define DSU_IOC_LOCK_TOKEN _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_LOCK_TOKEN, struct dsu_lock_token)
#define DSU_IOC_LOCK_OWNER _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_LOCK_OWNER, struct dsu_lock_owner)

#endif /* _UAPI_LINUX_DSU_H */
