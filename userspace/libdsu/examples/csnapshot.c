/* The C snapshot API (dsu_snapshot, dsu_restore), for the VM suite:
 *
 *   csnapshot save SEG FILE      create SEG with a counter, a table and a heap string, save it
 *   csnapshot restore SEG FILE   restore FILE (SEG must be gone), attach, check the values
 *   csnapshot bad FILE           dsu_restore of a damaged FILE must fail with -EBADMSG
 *
 * Prints "ok ..." and exits 0, or prints "error: ..." and exits 1.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdsu.h>

DSU_GLOBAL(uint64_t, snap_counter, 0);
struct snap_table {
	uint64_t v[1024];
};
DSU_GLOBAL_ZERO(struct snap_table, snap_table);
/* The address of a string in the shared heap (the same in every process). */
DSU_GLOBAL(uint64_t, snap_heap_string, 0);

static const char HEAP_TEXT[] = "kept in the shared heap across a snapshot";

static int fail(const char *what, int rc)
{
	printf("error: %s: %d (%s): %s\n", what, rc, dsu_strerror(rc), dsu_last_error());
	return 1;
}

static int save(const char *seg, const char *file)
{
	int rc = dsu_attach(seg, "snap-1", DSU_MUST_CREATE | DSU_HEAP, 0600);
	if (rc < 0)
		return fail("dsu_attach", rc);
	__atomic_store_n(&snap_counter, 4242, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 1024; i++)
		snap_table.v[i] = (uint64_t)i * i;
	char *s = dsu_malloc(sizeof(HEAP_TEXT));
	if (!s)
		return fail("dsu_malloc", -ENOMEM);
	memcpy(s, HEAP_TEXT, sizeof(HEAP_TEXT));
	snap_heap_string = (uint64_t)(uintptr_t)s;
	rc = dsu_snapshot(seg, file, DSU_SNAPSHOT_COMPRESS);
	if (rc < 0)
		return fail("dsu_snapshot", rc);
	rc = dsu_snapshot("c-snap-no-such-segment", file, 0);
	if (rc != -ENOENT)
		return fail("dsu_snapshot of a missing segment (want -ENOENT)", rc);
	rc = dsu_snapshot(seg, file, 0x80);
	if (rc != -EINVAL)
		return fail("dsu_snapshot with unknown flags (want -EINVAL)", rc);
	rc = dsu_restore(file, seg, 0);
	if (rc != -EEXIST || !strstr(dsu_last_error(), "already exists"))
		return fail("dsu_restore onto the live segment (want -EEXIST)", rc);
	printf("ok saved %s\n", file);
	return 0;
}

static int restore(const char *seg, const char *file)
{
	int rc = dsu_restore(file, NULL, 0);
	if (rc < 0)
		return fail("dsu_restore", rc);
	rc = dsu_attach(seg, "snap-2", DSU_MUST_EXIST, 0);
	if (rc < 0)
		return fail("dsu_attach after dsu_restore", rc);
	uint64_t c = __atomic_load_n(&snap_counter, __ATOMIC_SEQ_CST);
	if (c != 4242) {
		printf("error: counter %llu after restore, want 4242\n", (unsigned long long)c);
		return 1;
	}
	for (int i = 0; i < 1024; i++)
		if (snap_table.v[i] != (uint64_t)i * i) {
			printf("error: table[%d] = %llu after restore\n", i,
			       (unsigned long long)snap_table.v[i]);
			return 1;
		}
	const char *s = (const char *)(uintptr_t)snap_heap_string;
	if (!s || strcmp(s, HEAP_TEXT)) {
		printf("error: the heap string did not survive\n");
		return 1;
	}
	printf("ok restored counter=%llu heap=\"%s\"\n", (unsigned long long)c, s);
	return 0;
}

static int bad(const char *file)
{
	int rc = dsu_restore(file, "c-snap-bad", 0);
	if (rc != -EBADMSG)
		return fail("dsu_restore of a damaged file (want -EBADMSG)", rc);
	printf("ok refused: %s\n", dsu_last_error());
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "save"))
		return save(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "restore"))
		return restore(argv[2], argv[3]);
	if (argc == 3 && !strcmp(argv[1], "bad"))
		return bad(argv[2]);
	fprintf(stderr, "usage: csnapshot save SEG FILE | restore SEG FILE | bad FILE\n");
	return 2;
}
