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

/* 2 MiB of zeros in the NOBITS section: no space in the binary's file (common to v1 and v2). */
struct zeros {
	uint64_t first;
	uint64_t rest[262143];
};
DSU_GLOBAL_ZERO(struct zeros, zeros);

int main(int argc, char **argv)
{
	const struct var vars[] = { { "counter", &counter }, { "added", &added }, { "table_len", &table.len },
				    { "zeros", &zeros.first } };
	return run("c2", vars, 4, argc, argv);
}
