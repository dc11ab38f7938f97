/* C shared-heap example, version 1 (cheap.h): the list head, the table and the lock, with
 * `v1_only` first. */
#include "cheap.h"

DSU_GLOBAL(uint64_t, v1_only, 1);
DSU_GLOBAL(struct node *, list_head, NULL);
DSU_GLOBAL(struct table *, table, NULL);
DSU_GLOBAL(uint64_t, heap_lock, 0);

int main(int argc, char **argv)
{
	const struct roots r = { &heap_lock, &list_head, &table };
	return run(&r, "cheap1", argc, argv);
}
