/* C counter example, version 1: `counter` and `zeros` (kept in v2) and `old_only` (removed in
 * v2). */
#include "common.h"

DSU_GLOBAL(uint64_t, counter, 0);
DSU_GLOBAL(uint64_t, old_only, 7);

/* 2 MiB of zeros in the NOBITS section: no space in the binary's file (common to v1 and v2). */
struct zeros {
	uint64_t first;
	uint64_t rest[262143];
};
DSU_GLOBAL_ZERO(struct zeros, zeros);

int main(int argc, char **argv)
{
	const struct var vars[] = { { "counter", &counter }, { "old_only", &old_only }, { "zeros", &zeros.first } };
	return run("c1", vars, 3, argc, argv);
}
