/* C counter example, version 2: `counter` is common with v1, `old_only` is gone, `added`
 * (initialiser 42) and a three-page `table` are new. */
#include "common.h"

struct table {
	uint64_t len;
	uint64_t slots[1100];
};

DSU_GLOBAL(uint64_t, counter, 0);
DSU_GLOBAL(uint64_t, added, 42);
DSU_GLOBAL(struct table, table, { .len = 5 });

int main(int argc, char **argv)
{
	const struct var vars[] = { { "counter", &counter }, { "added", &added }, { "table_len", &table.len } };
	return run("c2", vars, 3, argc, argv);
}
