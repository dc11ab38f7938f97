/* The command loop of the C shared-heap examples cheap_v1 and cheap_v2: a linked list
 * (`struct node *next`) and a chained hash table, both of dsu_malloc'd blocks in the
 * segment's shared heap, rooted in globals. Both versions use these same heap structs;
 * their globals differ (cheap_v1.c, cheap_v2.c).
 *
 *   cheap_vN [--segment S] serve
 *
 * Commands on stdin, one per line, answered "ok ..." or "err ...":
 *   push V     a node with value V at the list's head
 *   put K V    key K to V in the table (a new entry, or the existing one updated)
 *   del K      removes key K (dsu_free of its entry)
 *   unlink V   removes the first node of value V (dsu_free of the node)
 *   list       the list's values, head first: "3,2,1" (empty: "-")
 *   table      the table's entries by ascending key: "10=100 30=300" (empty: "-")
 *   check      walks both: every pointer in the heap, the table's count right;
 *              answers "nodes=N entries=M"
 *   fill A N   for i in 0..N: push and put A*1000000+i (value i); for each odd i,
 *              unlink and del A*1000000+i-1 (so dsu_free runs between the mallocs)
 *   exit
 * The heap objects are shared by both versions and by concurrent processes: every access
 * holds the spin lock `heap_lock` (a global both versions declare alike).
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdsu.h>

#define BUCKETS 256

struct node {
	uint64_t value;
	struct node *next;
};

struct entry {
	uint64_t key;
	uint64_t value;
	struct entry *next;
};

struct table {
	uint64_t count;
	struct entry *buckets[BUCKETS];
};

/* A version's globals, by address (their layout differs between versions). */
struct roots {
	uint64_t *lock;
	struct node **head;
	struct table **table;
};

static void lock(const struct roots *r)
{
	while (__atomic_exchange_n(r->lock, 1, __ATOMIC_ACQUIRE))
		sched_yield();
}

static void unlock(const struct roots *r)
{
	__atomic_store_n(r->lock, 0, __ATOMIC_RELEASE);
}

static void *xmalloc(size_t n)
{
	void *p = dsu_malloc(n);
	if (!p) {
		fprintf(stderr, "dsu_malloc(%zu): %s\n", n, strerror(errno));
		exit(3);
	}
	return p;
}

/* The table, created by the first version to need it. Under the lock. */
static struct table *table_of(const struct roots *r)
{
	if (!*r->table) {
		struct table *t = dsu_calloc(1, sizeof *t);
		if (!t) {
			fprintf(stderr, "dsu_calloc: %s\n", strerror(errno));
			exit(3);
		}
		*r->table = t;
	}
	return *r->table;
}

static struct entry **bucket(struct table *t, uint64_t key)
{
	return &t->buckets[(key * 0x9E3779B97F4A7C15ull) >> 56];
}

static void push(const struct roots *r, uint64_t v)
{
	struct node *n = xmalloc(sizeof *n);
	n->value = v;
	n->next = *r->head;
	*r->head = n;
}

static int unlink_value(const struct roots *r, uint64_t v)
{
	for (struct node **p = r->head; *p; p = &(*p)->next) {
		if ((*p)->value == v) {
			struct node *n = *p;
			*p = n->next;
			dsu_free(n);
			return 1;
		}
	}
	return 0;
}

static void put(const struct roots *r, uint64_t k, uint64_t v)
{
	struct table *t = table_of(r);
	struct entry **b = bucket(t, k);
	for (struct entry *e = *b; e; e = e->next) {
		if (e->key == k) {
			e->value = v;
			return;
		}
	}
	struct entry *e = xmalloc(sizeof *e);
	e->key = k;
	e->value = v;
	e->next = *b;
	*b = e;
	t->count++;
}

static int del(const struct roots *r, uint64_t k)
{
	struct table *t = table_of(r);
	for (struct entry **p = bucket(t, k); *p; p = &(*p)->next) {
		if ((*p)->key == k) {
			struct entry *e = *p;
			*p = e->next;
			dsu_free(e);
			t->count--;
			return 1;
		}
	}
	return 0;
}

/* A growing output buffer (private memory: the answers are this process's own). */
struct out {
	char *s;
	size_t len, cap;
};

static void outf(struct out *o, const char *fmt, unsigned long long a, unsigned long long b)
{
	for (;;) {
		size_t room = o->cap - o->len;
		int n = snprintf(o->s + o->len, room, fmt, a, b);
		if ((size_t)n < room) {
			o->len += n;
			return;
		}
		o->cap = o->cap * 2 + n + 64;
		o->s = realloc(o->s, o->cap);
		if (!o->s)
			exit(3);
	}
}

static int cmp_entries(const void *a, const void *b)
{
	const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
	return x->key < y->key ? -1 : x->key > y->key;
}

static int in_heap(const struct dsu_heap_stats *s, const void *p)
{
	uintptr_t a = (uintptr_t)p;
	return a >= s->base && a < s->base + s->size && a % 16 == 0;
}

/* Runs one command under the lock; 0 ok, 1 error. */
static int command(const struct roots *r, int nw, char **w, struct out *o)
{
	uint64_t a = nw > 1 ? strtoull(w[1], NULL, 10) : 0, b = nw > 2 ? strtoull(w[2], NULL, 10) : 0;
	if (!strcmp(w[0], "push") && nw == 2) {
		push(r, a);
		outf(o, "pushed %llu%.0llu", a, 0);
	} else if (!strcmp(w[0], "put") && nw == 3) {
		put(r, a, b);
		outf(o, "%llu=%llu", a, b);
	} else if (!strcmp(w[0], "del") && nw == 2) {
		if (!del(r, a)) {
			outf(o, "no key %llu%.0llu", a, 0);
			return 1;
		}
		outf(o, "deleted %llu%.0llu", a, 0);
	} else if (!strcmp(w[0], "unlink") && nw == 2) {
		if (!unlink_value(r, a)) {
			outf(o, "no node %llu%.0llu", a, 0);
			return 1;
		}
		outf(o, "unlinked %llu%.0llu", a, 0);
	} else if (!strcmp(w[0], "list") && nw == 1) {
		if (!*r->head)
			outf(o, "-%.0llu%.0llu", 0, 0);
		for (struct node *n = *r->head; n; n = n->next)
			outf(o, n == *r->head ? "%llu%.0llu" : ",%llu%.0llu", n->value, 0);
	} else if (!strcmp(w[0], "table") && nw == 1) {
		struct table *t = table_of(r);
		struct entry **all = malloc((t->count + 1) * sizeof *all);
		size_t n = 0;
		for (int i = 0; i < BUCKETS; i++)
			for (struct entry *e = t->buckets[i]; e && n < t->count; e = e->next)
				all[n++] = e;
		qsort(all, n, sizeof *all, cmp_entries);
		if (!n)
			outf(o, "-%.0llu%.0llu", 0, 0);
		for (size_t i = 0; i < n; i++)
			outf(o, i ? " %llu=%llu" : "%llu=%llu", all[i]->key, all[i]->value);
		free(all);
	} else if (!strcmp(w[0], "check") && nw == 1) {
		struct dsu_heap_stats s;
		int rc = dsu_heap_stats(&s);
		if (rc < 0) {
			outf(o, "dsu_heap_stats: %lld%.0llu", (unsigned long long)rc, 0);
			return 1;
		}
		uint64_t nodes = 0, entries = 0;
		for (struct node *n = *r->head; n; n = n->next, nodes++)
			if (!in_heap(&s, n)) {
				outf(o, "node %llu at %#llx outside the heap", nodes, (uintptr_t)n);
				return 1;
			}
		struct table *t = table_of(r);
		if (!in_heap(&s, t)) {
			outf(o, "table at %#llx outside the heap%.0llu", (uintptr_t)t, 0);
			return 1;
		}
		for (int i = 0; i < BUCKETS; i++)
			for (struct entry *e = t->buckets[i]; e; e = e->next, entries++)
				if (!in_heap(&s, e) || bucket(t, e->key) != &t->buckets[i]) {
					outf(o, "entry of key %llu at %#llx misplaced", e->key, (uintptr_t)e);
					return 1;
				}
		if (entries != t->count) {
			outf(o, "table count %llu, %llu entries walked", t->count, entries);
			return 1;
		}
		outf(o, "nodes=%llu entries=%llu", nodes, entries);
	} else {
		outf(o, "usage: bad command%.0llu%.0llu", 0, 0);
		return 1;
	}
	return 0;
}

/* fill A N: each step under the lock on its own, so that other processes interleave. */
static void fill(const struct roots *r, uint64_t a, uint64_t n, struct out *o)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t k = a * 1000000 + i;
		lock(r);
		push(r, k);
		put(r, k, i);
		if (i % 2 && !(unlink_value(r, k - 1) && del(r, k - 1))) {
			unlock(r);
			fprintf(stderr, "fill: %llu vanished\n", (unsigned long long)(k - 1));
			exit(3);
		}
		unlock(r);
	}
	outf(o, "filled %llu %llu", a, n);
}

static int run(const struct roots *r, const char *label, int argc, char **argv)
{
	const char *segment = "cheap";
	if (argc == 4 && !strcmp(argv[1], "--segment"))
		segment = argv[2];
	if (strcmp(argv[argc - 1], "serve") || (argc != 2 && argc != 4)) {
		fprintf(stderr, "usage: %s [--segment S] serve\n", argv[0]);
		return 2;
	}
	int rc = dsu_attach(segment, label, DSU_HEAP, 0);
	if (rc < 0) {
		fprintf(stderr, "error: %s [%d: %s]\n", dsu_last_error(), rc, dsu_strerror(rc));
		return 1;
	}
	printf("ready %lld\n", (long long)dsu_version_id());
	fflush(stdout);
	char line[256];
	struct out o = { malloc(256), 0, 256 };
	while (fgets(line, sizeof line, stdin)) {
		char *w[4];
		int nw = 0;
		for (char *t = strtok(line, " \t\n"); t && nw < 4; t = strtok(NULL, " \t\n"))
			w[nw++] = t;
		if (!nw)
			continue;
		if (!strcmp(w[0], "exit")) {
			printf("ok bye\n");
			return 0;
		}
		o.len = 0;
		o.s[0] = 0;
		if (!strcmp(w[0], "fill") && nw == 3) {
			fill(r, strtoull(w[1], NULL, 10), strtoull(w[2], NULL, 10), &o);
			rc = 0;
		} else {
			lock(r);
			rc = command(r, nw, w, &o);
			unlock(r);
		}
		printf("%s %s\n", rc ? "err" : "ok", o.s);
		fflush(stdout);
	}
	return 0;
}
