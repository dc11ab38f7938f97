/* C shared-heap example, version 2 (cheap.h): the same heap structs, another global
 * layout (the lock first, the roots reordered, `v1_only` gone, `v2_added` new); the
 * globals point into the heap, which every version maps at the same address, so v1's
 * nodes and entries are v2's through plain pointers. */
#include "cheap.h"

DSU_GLOBAL(uint64_t, heap_lock, 0);
DSU_GLOBAL(uint64_t, v2_added, 2);
DSU_GLOBAL(struct table *, table, NULL);
DSU_GLOBAL(struct node *, list_head, NULL);

int main(int argc, char **argv)
{
	const struct roots r = { &heap_lock, &list_head, &table };
	return run(&r, "cheap2", argc, argv);
}
