/* The command loop of the C counter examples (mirrors the Rust counter examples).
 *
 *   ccounter_vN [--segment S] [--label L] [--owner UID] [--must-exist | --must-create] COMMAND
 *   COMMAND: read | get VAR | write VAR VALUE | wait-newer MS | serve
 *
 * `serve` reads commands from stdin, one per line, and answers "ok ..." or "err ...".
 * A failed dsu_attach prints "error: MESSAGE [-ERRNO: DESCRIPTION]" and exits with 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdsu.h>

struct var {
	const char *name;
	uint64_t *addr;
};

static void print_read(const struct var *vars, int n, char *out, size_t len)
{
	size_t used = 0;
	out[0] = 0;
	for (int i = 0; i < n; i++)
		used += snprintf(out + used, len - used, "%s%s=%llu", i ? " " : "", vars[i].name,
				 (unsigned long long)__atomic_load_n(vars[i].addr, __ATOMIC_SEQ_CST));
}

static const struct var *find(const struct var *vars, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(vars[i].name, name))
			return &vars[i];
	return NULL;
}

/* Runs one command; writes its answer to out; returns 0, 1 (error) or 2 (usage). */
static int command(const struct var *vars, int n, int argc, char **argv, char *out, size_t len)
{
	if (argc < 1) {
		snprintf(out, len, "usage: missing command");
		return 2;
	}
	if (!strcmp(argv[0], "read")) {
		print_read(vars, n, out, len);
		return 0;
	}
	if (!strcmp(argv[0], "get") && argc == 2) {
		const struct var *v = find(vars, n, argv[1]);
		if (!v) {
			snprintf(out, len, "no variable %s in this build", argv[1]);
			return 1;
		}
		snprintf(out, len, "%llu", (unsigned long long)__atomic_load_n(v->addr, __ATOMIC_SEQ_CST));
		return 0;
	}
	if (!strcmp(argv[0], "write") && argc == 3) {
		const struct var *v = find(vars, n, argv[1]);
		if (!v) {
			snprintf(out, len, "no variable %s in this build", argv[1]);
			return 1;
		}
		__atomic_store_n(v->addr, strtoull(argv[2], NULL, 10), __ATOMIC_SEQ_CST);
		snprintf(out, len, "%s=%llu", v->name, (unsigned long long)__atomic_load_n(v->addr, __ATOMIC_SEQ_CST));
		return 0;
	}
	if (!strcmp(argv[0], "wait-newer") && argc == 2) {
		int r = dsu_wait_for_newer(atoi(argv[1]));
		if (r < 0) {
			snprintf(out, len, "%s", dsu_last_error());
			return 1;
		}
		snprintf(out, len, "%s", r ? "newer" : "timeout");
		return 0;
	}
	snprintf(out, len, "usage: unknown command %s", argv[0]);
	return 2;
}

static int run(const char *default_label, const struct var *vars, int n, int argc, char **argv)
{
	const char *segment = "ccounter", *label = default_label, *owner = NULL;
	char out[4096];
	argc--, argv++;
	unsigned int flags = 0;
	for (;;) {
		if (argc >= 1 && !strcmp(argv[0], "--must-exist")) {
			flags |= DSU_MUST_EXIST;
			argc--, argv++;
		} else if (argc >= 1 && !strcmp(argv[0], "--must-create")) {
			flags |= DSU_MUST_CREATE;
			argc--, argv++;
		} else if (argc >= 2 && !strcmp(argv[0], "--segment")) {
			segment = argv[1];
			argc -= 2, argv += 2;
		} else if (argc >= 2 && !strcmp(argv[0], "--owner")) {
			owner = argv[1];
			argc -= 2, argv += 2;
		} else if (argc >= 2 && !strcmp(argv[0], "--label")) {
			label = argv[1];
			argc -= 2, argv += 2;
		} else {
			break;
		}
	}
	if (argc < 1) {
		fprintf(stderr, "usage: ccounter_vN [--segment S] [--label L] [--owner UID] [--must-exist | --must-create] (read | get VAR | write VAR VALUE | wait-newer MS | serve)\n");
		return 2;
	}
	/* --owner: share a segment that user UID owns (else only our own user's segment). */
	int rc = owner ? dsu_attach_shared(segment, label, flags, 0,
					   (unsigned int)strtoul(owner, NULL, 10))
		       : dsu_attach(segment, label, flags, 0);
	if (rc < 0) {
		fprintf(stderr, "error: %s [%d: %s]\n", dsu_last_error(), rc, dsu_strerror(rc));
		return 1;
	}
	if (!strcmp(argv[0], "serve")) {
		char line[1024];
		printf("ready %lld\n", (long long)dsu_version_id());
		fflush(stdout);
		while (fgets(line, sizeof line, stdin)) {
			char *words[8];
			int nw = 0;
			for (char *w = strtok(line, " \t\n"); w && nw < 8; w = strtok(NULL, " \t\n"))
				words[nw++] = w;
			if (!nw)
				continue;
			if (!strcmp(words[0], "exit")) {
				printf("ok bye\n");
				return 0;
			}
			int r = command(vars, n, nw, words, out, sizeof out);
			printf("%s %s\n", r ? "err" : "ok", out);
			fflush(stdout);
		}
		return 0;
	}
	rc = command(vars, n, argc, argv, out, sizeof out);
	fprintf(rc ? stderr : stdout, "%s\n", out);
	return rc;
}
