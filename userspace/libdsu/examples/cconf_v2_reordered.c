/* C struct example, version 2 with the fields of `struct conf` swapped: the same struct
 * name and size as in cconf_v1.c, another layout. Attaching to v1's segment must fail
 * with a conflict that names the moved field instead of sharing v1's bytes. */
#include "common.h"

struct conf {
	uint64_t limit;
	uint64_t port;
};

DSU_TYPE(conf, struct conf, DSU_FIELD(limit, uint64_t), DSU_FIELD(port, uint64_t));
DSU_GLOBAL_TYPED(conf, conf, { .limit = 10, .port = 80 });

int main(int argc, char **argv)
{
	const struct var vars[] = { { "port", &conf.port }, { "limit", &conf.limit } };
	return run("cconf2r", vars, 2, argc, argv);
}
