/* C counter example, version 1: `counter` (kept in v2) and `old_only` (removed in v2). */
#include "common.h"

DSU_GLOBAL(uint64_t, counter, 0);
DSU_GLOBAL(uint64_t, old_only, 7);

int main(int argc, char **argv)
{
	const struct var vars[] = { { "counter", &counter }, { "old_only", &old_only } };
	return run("c1", vars, 2, argc, argv);
}
