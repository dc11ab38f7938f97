/* C struct example, version 1: `conf` is a struct described field by field with DSU_TYPE,
 * so its fingerprint follows its layout (see cconf_v2_same.c and cconf_v2_reordered.c). */
#include "common.h"

struct conf {
	uint64_t port;
	uint64_t limit;
};

DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint64_t), DSU_FIELD(limit, uint64_t));
DSU_GLOBAL_TYPED(conf, conf, { .port = 80, .limit = 10 });

int main(int argc, char **argv)
{
	const struct var vars[] = { { "port", &conf.port }, { "limit", &conf.limit } };
	return run("cconf1", vars, 2, argc, argv);
}
