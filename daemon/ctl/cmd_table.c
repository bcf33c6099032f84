/* SPDX-License-Identifier: MIT */
/*
 * cmd_table.c: the read-only views of the table: keys, inspect, get,
 * observers and endpoints. Everything goes through view.h: no endpoint is
 * claimed and nothing is written, so these work with no worker running.
 */
#include "ctl.h"
#include "out.h"
#include "util.h"
#include "view.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- keys ---- */

struct key_ent {
	uint64_t rev;
	uint32_t len;
	uint8_t key[HL_KEY_MAX];
};

struct key_list {
	struct key_ent *v;
	size_t n, cap;
};

static int
collect_key(const uint8_t *key, uint32_t len, uint64_t rev, void *arg)
{
	struct key_list *l = arg;
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		struct key_ent *nv = realloc(l->v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = ncap;
	}
	struct key_ent *e = &l->v[l->n++];
	e->rev = rev;
	e->len = len;
	memcpy(e->key, key, len);
	return 0;
}

struct prefix_filter {
	struct key_list *l;
	const char *p;
	size_t len;
};

static int
collect_prefixed(const uint8_t *key, uint32_t len, uint64_t rev, void *arg)
{
	struct prefix_filter *f = arg;
	if (len < f->len || memcmp(key, f->p, f->len) != 0)
		return 0;
	return collect_key(key, len, rev, f->l);
}

static int
key_cmp(const void *a, const void *b)
{
	const struct key_ent *x = a, *y = b;
	int r = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
	if (r)
		return r;
	return x->len < y->len ? -1 : x->len > y->len;
}

int
ctl_cmd_keys(struct ctl *c, const struct ctl_args *a)
{
	(void)a;
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	struct key_list l = { 0 };
	rc = view_keys(&v, collect_key, &l);
	view_close(&v);
	if (rc) {
		free(l.v);
		return ctl_fail(c, CTL_FAILED, rc, "%s", hl_strerror(rc));
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(l.v[0]), key_cmp);
	if (c->json) {
		struct out o;
		out_init(&o, stdout, 1);
		out_arr_begin(&o, NULL);
		for (size_t i = 0; i < l.n; i++) {
			out_obj_begin(&o, NULL);
			out_bytes(&o, "key", l.v[i].key, l.v[i].len);
			out_u64(&o, "revision", l.v[i].rev);
			out_obj_end(&o);
		}
		out_arr_end(&o);
		rc = out_finish(&o);
	} else {
		for (size_t i = 0; i < l.n; i++) {
			out_text_escape(stdout, l.v[i].key, l.v[i].len, 0);
			printf("\t%llu\n", (unsigned long long)l.v[i].rev);
		}
		rc = fflush(stdout);
	}
	free(l.v);
	return rc ? CTL_FAILED : CTL_OK;
}

/* ---- get / inspect ---- */

/* get --prefix P: the keys with a value that start with P, sorted, each
 * with its value and revision read again under its seqlock (a key deleted
 * between the listing and the read is left out). */
static int
get_prefix(struct ctl *c, const char *prefix)
{
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	struct key_list l = { 0 };
	struct prefix_filter pf = { .l = &l, .p = prefix, .len = strlen(prefix) };
	size_t cap = v.seg.h->max_value ? v.seg.h->max_value : 1;
	uint8_t *buf = malloc(cap);
	rc = buf ? view_keys(&v, collect_prefixed, &pf) : -ENOMEM;
	if (rc) {
		view_close(&v);
		free(l.v);
		free(buf);
		return ctl_fail(c, CTL_FAILED, rc, "%s", hl_strerror(rc));
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(l.v[0]), key_cmp);
	struct out o; /* --json only; text lines are written as they come */
	out_init(&o, stdout, c->json);
	if (c->json)
		out_arr_begin(&o, NULL);
	for (size_t i = 0; i < l.n; i++) {
		size_t len = 0;
		uint64_t rev = 0;
		if (view_get(&v, l.v[i].key, l.v[i].len, buf, cap, &len, &rev) != 0)
			continue;
		if (len > cap)
			len = cap; /* cannot happen: a value is at most max_value */
		if (c->json) {
			out_obj_begin(&o, NULL);
			out_bytes(&o, "key", l.v[i].key, l.v[i].len);
			out_bytes(&o, "value", buf, len);
			out_u64(&o, "length", len);
			out_u64(&o, "revision", rev);
			out_obj_end(&o);
		} else {
			out_text_escape(stdout, l.v[i].key, l.v[i].len, 0);
			printf(" %llu ", (unsigned long long)rev);
			out_text_escape(stdout, buf, len, 0);
			putchar('\n');
		}
	}
	view_close(&v);
	free(l.v);
	free(buf);
	if (c->json) {
		out_arr_end(&o);
		rc = out_finish(&o);
	} else {
		rc = fflush(stdout);
	}
	return rc ? CTL_FAILED : CTL_OK;
}

int
ctl_cmd_get(struct ctl *c, const struct ctl_args *a)
{
	if (a->set[GET_PREFIX] == (a->npos == 1))
		return ctl_fail(c, CTL_USAGE, 0, "give a KEY or --prefix PREFIX (one of them)");
	if (a->set[GET_PREFIX]) {
		if (a->set[GET_REV])
			return ctl_fail(c, CTL_USAGE, 0, "--rev takes a KEY, not --prefix");
		if (ctl_check_key(c, a->val[GET_PREFIX]))
			return CTL_USAGE;
		return get_prefix(c, a->val[GET_PREFIX]);
	}
	const char *key = a->pos[0];
	if (ctl_check_key(c, key))
		return CTL_USAGE;
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	size_t cap = v.seg.h->max_value ? v.seg.h->max_value : 1, len = 0;
	uint64_t rev = 0;
	uint8_t *buf = malloc(cap);
	rc = buf ? view_get(&v, key, strlen(key), buf, cap, &len, &rev) : -ENOMEM;
	view_close(&v);
	if (a->set[GET_REV] && !c->json && (rc == 0 || rc == -ENOENT)) {
		/* The revision to give set/del --if-rev: 0 for a key with no
		 * value (view_get() may report a delete's revision). */
		free(buf);
		printf("%llu\n", rc ? 0ull : (unsigned long long)rev);
		if (fflush(stdout))
			return CTL_FAILED;
		return rc ? ctl_fail(c, CTL_NOTFOUND, rc, "not found: no such key '%s'", key)
		          : CTL_OK;
	}
	if (rc) {
		free(buf);
		if (rc == -ENOENT)
			return ctl_fail(c, CTL_NOTFOUND, rc, "not found: no such key '%s'", key);
		return ctl_fail(c, CTL_FAILED, rc, "%s", hl_strerror(rc));
	}
	if (len > cap)
		len = cap; /* cannot happen: a value is at most max_value */
	if (c->json) {
		struct out o;
		out_init(&o, stdout, 1);
		out_obj_begin(&o, NULL);
		out_str(&o, "key", key);
		out_bytes(&o, "value", buf, len);
		out_u64(&o, "length", len);
		out_u64(&o, "revision", rev);
		out_obj_end(&o);
		rc = out_finish(&o);
	} else {
		rc = (len && fwrite(buf, 1, len, stdout) != len) || fflush(stdout);
	}
	free(buf);
	return rc ? CTL_FAILED : CTL_OK;
}

int
ctl_cmd_inspect(struct ctl *c, const struct ctl_args *a)
{
	const char *key = a->pos[0];
	if (ctl_check_key(c, key))
		return CTL_USAGE;
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	size_t klen = strlen(key), len = 0, cap = 0;
	uint64_t rev = 0;
	struct hl_observer_info *obs = NULL;
	int has_value = view_get(&v, key, klen, NULL, 0, &len, &rev) == 0;
	/* Observers come and go while we look: ask with room for what the
	 * last answer said, a few times, then take what fits. */
	int n = 0;
	for (int tries = 0; tries < 8; tries++) {
		n = view_inspect(&v, key, klen, obs, cap);
		if (n < 0 || (size_t)n <= cap)
			break;
		free(obs);
		cap = (size_t)n + 16;
		obs = calloc(cap, sizeof(*obs));
		if (!obs) {
			n = -ENOMEM;
			break;
		}
	}
	view_close(&v);
	if (n < 0) {
		free(obs);
		if (n == -ENOENT)
			return ctl_fail(c, CTL_NOTFOUND, n, "not found: no such key '%s'", key);
		return ctl_fail(c, CTL_FAILED, n, "%s", hl_strerror(n));
	}
	size_t shown = (size_t)n < cap ? (size_t)n : cap;
	struct out o;
	out_init(&o, stdout, c->json);
	out_obj_begin(&o, NULL);
	out_str(&o, "key", key);
	out_bool(&o, "has_value", has_value);
	if (has_value) {
		out_u64(&o, "value_length", len);
		out_u64(&o, "revision", rev);
	} else {
		out_null(&o, "value_length");
		out_null(&o, "revision");
	}
	out_u64(&o, "observer_count", (uint64_t)n);
	out_arr_begin(&o, "observers");
	for (size_t i = 0; i < shown; i++) {
		out_obj_begin(&o, NULL);
		out_u64(&o, "id", obs[i].id);
		out_i64(&o, "pid", obs[i].pid);
		out_bool(&o, "alive", obs[i].alive);
		out_dur(&o, "age", obs[i].age_ns);
		out_u64(&o, "queue_depth_bytes", obs[i].queue_depth);
		out_u64(&o, "dropped", obs[i].dropped);
		out_u64(&o, "delivered_revision", obs[i].delivered_revision);
		out_obj_end(&o);
	}
	out_arr_end(&o);
	out_obj_end(&o);
	free(obs);
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}

/* ---- observers ---- */

struct obs_walk {
	struct out *o;
	uint32_t pid; /* 0 = all */
	uint64_t now;
};

static int
write_observer(const struct view_obs *ob, void *arg)
{
	struct obs_walk *w = arg;
	if (w->pid && ob->pid != w->pid)
		return 0;
	struct out *o = w->o;
	out_obj_begin(o, NULL);
	out_u64(o, "id", ob->id);
	out_u64(o, "pid", ob->pid);
	out_bool(o, "alive", ob->alive);
	out_u64(o, "endpoint", ob->endpoint);
	if (ob->key_len)
		out_bytes(o, "key", ob->key, ob->key_len);
	else
		out_null(o, "key");
	/* A prefix observer's key is its prefix, and its delivered revision
	 * the one it started at (it spans shards: dispatch.c). */
	out_bool(o, "prefix", (ob->flags & HL_OBSERVE_PREFIX) != 0);
	out_str(o, "filter",
	        ob->flags & HL_OBSERVE_NOPUT      ? "delete"
	        : ob->flags & HL_OBSERVE_NODELETE ? "put"
	                                          : "all");
	out_u64(o, "delivered_revision", ob->delivered_rev);
	out_u64(o, "dropped", ob->dropped);
	out_dur(o, "age", w->now > ob->created_ns ? w->now - ob->created_ns : 0);
	out_obj_end(o);
	return 0;
}

int
ctl_cmd_observers(struct ctl *c, const struct ctl_args *a)
{
	uint64_t pid = 0;
	if (a->set[OBSERVERS_PID] && ctl_parse_u64(a->val[OBSERVERS_PID], 1, INT32_MAX, &pid))
		return ctl_fail(c, CTL_USAGE, 0, "--pid needs a process id, not '%s'",
		                a->val[OBSERVERS_PID]);
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	struct out o;
	out_init(&o, stdout, c->json);
	struct obs_walk w = { .o = &o, .pid = (uint32_t)pid, .now = hl__wall_ns() };
	out_arr_begin(&o, NULL);
	rc = view_observers(&v, write_observer, &w);
	out_arr_end(&o);
	view_close(&v);
	if (rc)
		return ctl_fail(c, CTL_FAILED, rc, "%s", hl_strerror(rc));
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}

/* ---- endpoints ---- */

static void
write_depths(struct out *o, const char *name, const uint64_t *d, uint32_t shards)
{
	out_arr_begin(o, name);
	for (uint32_t s = 0; s < shards; s++) {
		if (d[s] == UINT64_MAX)
			out_null(o, NULL);
		else
			out_u64(o, NULL, d[s]);
	}
	out_arr_end(o);
}

int
ctl_cmd_endpoints(struct ctl *c, const struct ctl_args *a)
{
	(void)a;
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	const struct hl_shm_header *h = v.seg.h;
	uint32_t shards = h->shards < HL_SHARDS_MAX ? h->shards : HL_SHARDS_MAX;
	struct view_ep *e = malloc(sizeof(*e));
	if (!e) {
		view_close(&v);
		return ctl_fail(c, CTL_FAILED, -ENOMEM, "out of memory");
	}
	struct out o;
	out_init(&o, stdout, c->json);
	out_arr_begin(&o, NULL);
	for (uint32_t i = 0; i < h->max_endpoints; i++) {
		if (!view_endpoint(&v, i, e))
			continue;
		out_obj_begin(&o, NULL);
		out_u64(&o, "index", e->idx);
		out_str(&o, "state", view_ep_state(e->state));
		out_u64(&o, "pid", e->pid);
		out_bool(&o, "alive", e->alive);
		out_u64(&o, "gen", e->state == HL_EP_FREE ? e->claim_gen : e->gen);
		out_u64(&o, "observers", e->nobs);
		out_time(&o, "attached", e->state == HL_EP_FREE ? 0 : e->attached_ns);
		write_depths(&o, "request_bytes", e->req_depth, shards);
		write_depths(&o, "event_bytes", e->ev_depth, shards);
		out_obj_end(&o);
	}
	out_arr_end(&o);
	view_close(&v);
	free(e);
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}
