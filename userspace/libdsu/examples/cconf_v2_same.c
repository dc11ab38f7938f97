/* C struct example, version 2 with the same layout of `struct conf` as cconf_v1.c: it
 * shares v1's bytes. It adds `retries`. */
#include "common.h"

struct conf {
	uint64_t port;
	uint64_t limit;
};

DSU_TYPE(conf, struct conf, DSU_FIELD(port, uint64_t), DSU_FIELD(limit, uint64_t));
DSU_GLOBAL_TYPED(conf, conf, { .port = 1, .limit = 1 });
DSU_GLOBAL(uint64_t, retries, 3);

int main(int argc, char **argv)
{
	const struct var vars[] = {
		{ "port", &conf.port }, { "limit", &conf.limit }, { "retries", &retries }
	};
	return run("cconf2", vars, 3, argc, argv);
}
