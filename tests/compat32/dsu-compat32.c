/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * dsu-compat32: a 32-bit (i386) static program that drives /dev/dsu through the kernel's
 * compat ioctl path: ATTACH, RESOLVE, BIND, READY, mmap, READ_VAR, GC, LIST_SEGMENTS and
 * DESTROY, plus a command with a wrong encoded size (ENOTTY). It also checks at compile time that
 * every struct has the same size for i386 as for x86_64 (fixed-width fields, explicit
 * padding), which is what lets the module use compat_ptr_ioctl.
 *
 * Usage: dsu-compat32 SEGMENT-NAME. Prints "compat32 ok" and exits 0 on success.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../uapi/dsu.h"

_Static_assert(sizeof(void *) == 4, "build with -m32");
_Static_assert(sizeof(struct dsu_attach) == 88, "dsu_attach");
_Static_assert(sizeof(struct dsu_var) == 216, "dsu_var");
_Static_assert(sizeof(struct dsu_resolve) == 32, "dsu_resolve");
_Static_assert(sizeof(struct dsu_bind) == 80, "dsu_bind");
_Static_assert(sizeof(struct dsu_extent) == 16, "dsu_extent");
_Static_assert(sizeof(struct dsu_event) == 64, "dsu_event");
_Static_assert(sizeof(struct dsu_list) == 96, "dsu_list");
_Static_assert(sizeof(struct dsu_segment_info) == 144, "dsu_segment_info");
_Static_assert(sizeof(struct dsu_variable_info) == 216, "dsu_variable_info");
_Static_assert(sizeof(struct dsu_version_info) == 72, "dsu_version_info");
_Static_assert(sizeof(struct dsu_read_var) == 248, "dsu_read_var");
_Static_assert(sizeof(struct dsu_destroy) == 72, "dsu_destroy");
_Static_assert(sizeof(struct dsu_heap) == 32, "dsu_heap");
_Static_assert(sizeof(struct dsu_heap_grow) == 24, "dsu_heap_grow");
_Static_assert(sizeof(struct dsu_heap_discard) == 24, "dsu_heap_discard");
_Static_assert(sizeof(struct dsu_read_heap) == 96, "dsu_read_heap");
_Static_assert(sizeof(struct dsu_gc) == 112, "dsu_gc");

#define CHECK(cond, what)                                                               \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "dsu-compat32: %s failed (errno %d: %s)\n", what, \
				errno, strerror(errno));                                \
			return 1;                                                       \
		}                                                                       \
	} while (0)

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "compat32";
	int fd = open("/dev/dsu", O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0, "open /dev/dsu");

	struct dsu_attach a = { .size = sizeof(a) };
	strncpy(a.name, name, sizeof(a.name) - 1);
	CHECK(ioctl(fd, DSU_IOC_ATTACH, &a) == 0 && a.created == 1, "ATTACH");

	uint64_t init = 0x1122334455667788ULL;
	struct dsu_var v = { .size = 8, .align = 8, .fingerprint = 7, .init = (uintptr_t)&init };
	strcpy(v.name, "g");
	struct dsu_resolve r = {
		.size = sizeof(r), .var_size = sizeof(v), .count = 1, .vars = (uintptr_t)&v,
	};
	CHECK(ioctl(fd, DSU_IOC_RESOLVE, &r) == 0 && v.status == DSU_VAR_ADDED && r.added == 1,
	      "RESOLVE");

	uint64_t page = v.first_page;
	struct dsu_bind b = { .size = sizeof(b), .page_count = 1, .pages = (uintptr_t)&page };
	strcpy(b.label, "i386");
	CHECK(ioctl(fd, DSU_IOC_BIND, &b) == 0 && b.version_id > 0, "BIND");
	CHECK(ioctl(fd, DSU_IOC_READY, 0) == 0, "READY");

	volatile uint64_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED, "mmap");
	CHECK(*m == init, "the mapped initial value");
	*m = 0xabcdef0123ULL;

	uint64_t out = 0;
	struct dsu_read_var rv = {
		.size = sizeof(rv), .fingerprint = 7, .length = 8, .buf = (uintptr_t)&out,
	};
	strncpy(rv.segment, name, sizeof(rv.segment) - 1);
	strcpy(rv.name, "g");
	CHECK(ioctl(fd, DSU_IOC_READ_VAR, &rv) == 0 && rv.length == 8 && out == 0xabcdef0123ULL,
	      "READ_VAR");

	struct dsu_variable_info vrecs[4];
	struct dsu_gc g = {
		.size = sizeof(g), .flags = DSU_GC_DRY_RUN | DSU_GC_MIN_AGE,
		.record_size = sizeof(vrecs[0]), .count = 4, .records = (uintptr_t)vrecs,
	};
	strncpy(g.segment, name, sizeof(g.segment) - 1);
	CHECK(ioctl(fd, DSU_IOC_GC, &g) == 0 && g.total == 0 && g.count == 0 &&
		      g.generation == 1,
	      "GC (dry run; the only variable is mapped)");

	struct dsu_segment_info recs[8];
	struct dsu_list l = {
		.size = sizeof(l), .record_size = sizeof(recs[0]), .count = 8,
		.records = (uintptr_t)recs,
	};
	CHECK(ioctl(fd, DSU_IOC_LIST_SEGMENTS, &l) == 0 && l.total >= 1, "LIST_SEGMENTS");
	int found = 0;
	for (unsigned i = 0; i < l.count; i++)
		found |= strcmp(recs[i].name, name) == 0 && recs[i].pages == 1;
	CHECK(found, "the segment in LIST_SEGMENTS");

	/* ATTACH encoded with another size is not a command the module knows. */
	errno = 0;
	CHECK(ioctl(fd, _IOWR(DSU_IOC_MAGIC, DSU_IOC_NR_ATTACH, char[72]), &a) == -1 &&
		      errno == ENOTTY,
	      "ENOTTY for a wrong encoded size");

	munmap((void *)m, 4096);
	close(fd);
	fd = open("/dev/dsu", O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0, "reopen /dev/dsu");
	struct dsu_destroy d = { .size = sizeof(d) };
	strncpy(d.name, name, sizeof(d.name) - 1);
	CHECK(ioctl(fd, DSU_IOC_DESTROY, &d) == 0, "DESTROY");
	close(fd);
	printf("compat32 ok\n");
	return 0;
}
