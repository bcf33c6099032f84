/* SPDX-License-Identifier: MIT */
/*
 * cmd_top.c: heirloomctl top: a live view of rates, like top(1). Every
 * interval it samples the segment read-only and prints the global rates
 * (publishes, skips, deletes, notifications, lag drops per second), the
 * busiest keys and the busiest endpoints.
 *
 * Rates per key come from the key slot's sequence lock, which moves by two
 * on every write of the slot's value (publish, delete, and the delete's
 * completion): changes/s = delta(seq) / 2 / dt. That is a close
 * approximation (a delete counts twice), costs the worker nothing, and
 * needs no counter per key. Rates per endpoint are the bytes per second
 * that moved through its rings (request tail, event head), summed over
 * shards. Like every read-only command it claims no endpoint.
 */
#include "ctl.h"
#include "out.h"
#include "view.h"

#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct rate {
	uint32_t idx;
	double per_s;
};

static int
by_rate(const void *a, const void *b)
{
	const struct rate *x = a, *y = b;
	return (x->per_s < y->per_s) - (x->per_s > y->per_s);
}

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

struct sample {
	uint64_t t_ns;
	struct hl_stats st;
	uint64_t *key_seq;  /* per key slot */
	uint64_t *ep_bytes; /* per endpoint: request + event bytes moved */
};

static void
take(const struct view *v, struct sample *s)
{
	const struct hl_shm_header *h = v->seg.h;
	struct view_stats vs;
	view_stats(v, &vs);
	s->st = vs.st;
	s->t_ns = hl__now_ns();
	for (uint32_t i = 1; i <= h->max_keys; i++)
		s->key_seq[i - 1] =
		        atomic_load_explicit(&hl__key(&v->seg, i)->seq, memory_order_relaxed);
	for (uint32_t e = 0; e < h->max_endpoints; e++) {
		uint64_t b = 0;
		for (uint32_t sh = 0; sh < h->shards; sh++) {
			struct hl_shm_epw_shard *ws = hl__epw_shard(&v->seg, e, sh);
			b += atomic_load_explicit(&ws->req_tail, memory_order_relaxed);
			b += atomic_load_explicit(&ws->ev_head, memory_order_relaxed);
		}
		s->ep_bytes[e] = b;
	}
}

static double
per_s(uint64_t a, uint64_t b, double dt)
{
	return b >= a && dt > 0 ? (double)(b - a) / dt : 0.0;
}

/* The worker's state and its oldest heartbeat (issue 22): "hung" as soon
 * as a thread is past the keeper's --hang-timeout. */
static void
write_worker(struct out *o, const struct view *v)
{
	struct view_owner ow;
	struct view_stats vs;
	struct view_live live;
	view_owner(v, &ow);
	view_stats(v, &vs);
	view_liveness(v, &live);
	out_obj_begin(o, "worker");
	out_str(o, "state", view_worker_state(&ow, &vs, &live));
	out_u64(o, "pid", ow.role == HL_ROLE_WORKER ? ow.pid : 0);
	if (ow.role == HL_ROLE_WORKER && ow.alive) {
		unsigned oldest = 0;
		for (unsigned i = 1; i < live.n; i++)
			if (live.t[i].age_ns > live.t[oldest].age_ns)
				oldest = i;
		out_dur(o, "oldest_heartbeat", live.t[oldest].age_ns);
		out_str(o, "oldest_thread", live.t[oldest].name);
	}
	out_obj_end(o);
}

static void
frame(struct ctl *c, const struct view *v, const struct sample *a, const struct sample *b,
      struct rate *kr, struct rate *er, uint32_t limit)
{
	const struct hl_shm_header *h = v->seg.h;
	double dt = (double)(b->t_ns - a->t_ns) / 1e9;
	uint32_t nk = 0, ne = 0;
	for (uint32_t i = 1; i <= h->max_keys; i++) {
		double r = per_s(a->key_seq[i - 1], b->key_seq[i - 1], dt) / 2.0;
		if (r > 0)
			kr[nk++] = (struct rate){ .idx = i, .per_s = r };
	}
	for (uint32_t e = 0; e < h->max_endpoints; e++) {
		double r = per_s(a->ep_bytes[e], b->ep_bytes[e], dt);
		if (r > 0)
			er[ne++] = (struct rate){ .idx = e, .per_s = r };
	}
	qsort(kr, nk, sizeof(*kr), by_rate);
	qsort(er, ne, sizeof(*er), by_rate);
	if (nk > limit)
		nk = limit;

	struct out o;
	out_init(&o, stdout, c->json);
	if (!c->json && isatty(STDOUT_FILENO))
		fputs("\033[H\033[2J", stdout);
	out_obj_begin(&o, NULL);
	out_str(&o, "segment", c->name);
	out_u64(&o, "interval_ms", (uint64_t)(dt * 1000.0 + 0.5));
	out_obj_begin(&o, "rates");
	out_u64(&o, "publishes_per_s", (uint64_t)per_s(a->st.publishes, b->st.publishes, dt));
	out_u64(&o, "skipped_per_s",
	        (uint64_t)per_s(a->st.skipped_unchanged, b->st.skipped_unchanged, dt));
	out_u64(&o, "deletes_per_s", (uint64_t)per_s(a->st.deletes, b->st.deletes, dt));
	out_u64(&o, "notifications_per_s",
	        (uint64_t)per_s(a->st.notifications, b->st.notifications, dt));
	out_u64(&o, "lagged_drops_per_s",
	        (uint64_t)per_s(a->st.lagged_drops, b->st.lagged_drops, dt));
	out_u64(&o, "observers_added_per_s",
	        (uint64_t)per_s(a->st.observers_added, b->st.observers_added, dt));
	out_obj_end(&o);
	out_u64(&o, "keys", b->st.keys);
	out_u64(&o, "observers", b->st.observers);
	out_u64(&o, "endpoints", b->st.endpoints);
	write_worker(&o, v);
	out_arr_begin(&o, "top_keys");
	for (uint32_t i = 0; i < nk; i++) {
		struct hl_shm_key *k = hl__key(&v->seg, kr[i].idx);
		uint8_t key[HL_KEY_MAX];
		uint32_t kl = __atomic_load_n(&k->key_len, __ATOMIC_RELAXED);
		if (kl > HL_KEY_MAX)
			kl = 0;
		hl__racy_copy_out(key, hl__key_bytes(k), kl);
		out_obj_begin(&o, NULL);
		out_bytes(&o, "key", key, kl);
		out_u64(&o, "changes_per_s", (uint64_t)(kr[i].per_s + 0.5));
		out_u64(&o, "observers", atomic_load_explicit(&k->nobs, memory_order_relaxed));
		out_obj_end(&o);
	}
	out_arr_end(&o);
	out_arr_begin(&o, "top_endpoints");
	for (uint32_t i = 0, shown = 0; i < ne && shown < limit; i++) {
		struct view_ep ve;
		if (!view_endpoint(v, er[i].idx, &ve))
			continue; /* gone since the sample: its rate is history */
		shown++;
		out_obj_begin(&o, NULL);
		out_u64(&o, "endpoint", er[i].idx);
		out_u64(&o, "pid", ve.pid ? ve.pid : ve.claim_pid);
		out_u64(&o, "bytes_per_s", (uint64_t)(er[i].per_s + 0.5));
		out_u64(&o, "observers", ve.nobs);
		uint64_t depth = 0;
		for (uint32_t sh = 0; sh < h->shards; sh++)
			if (ve.ev_depth[sh] != UINT64_MAX)
				depth += ve.ev_depth[sh];
		out_u64(&o, "event_bytes_queued", depth);
		out_obj_end(&o);
	}
	out_arr_end(&o);
	out_obj_end(&o);
	out_finish(&o); /* ends the line: one JSON object per frame */
	fflush(stdout);
}

int
ctl_cmd_top(struct ctl *c, const struct ctl_args *a)
{
	uint64_t interval = 1000, count = 0, limit = 10;
	if ((a->set[0] && ctl_parse_u64(a->val[0], 10, 3600000, &interval)) ||
	    (a->set[1] && ctl_parse_u64(a->val[1], 1, UINT32_MAX, &count)) ||
	    (a->set[2] && ctl_parse_u64(a->val[2], 1, 1000, &limit)))
		return ctl_fail(c, CTL_USAGE, 0, "bad --interval, --count or --limit (see --help)");
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	const struct hl_shm_header *h = v.seg.h;
	struct sample s[2];
	struct rate *kr = calloc(h->max_keys, sizeof(*kr));
	struct rate *er = calloc(h->max_endpoints, sizeof(*er));
	int code = CTL_OK;
	for (int i = 0; i < 2; i++) {
		s[i].key_seq = calloc(h->max_keys, sizeof(uint64_t));
		s[i].ep_bytes = calloc(h->max_endpoints, sizeof(uint64_t));
		if (!s[i].key_seq || !s[i].ep_bytes)
			code = CTL_FAILED;
	}
	if (!kr || !er)
		code = CTL_FAILED;
	if (code != CTL_OK)
		ctl_fail(c, code, -ENOMEM, "out of memory");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (code == CTL_OK) {
		take(&v, &s[0]);
		for (uint64_t n = 0, cur = 0; !stop && (count == 0 || n < count); n++) {
			struct timespec ts = { .tv_sec = (time_t)(interval / 1000),
				               .tv_nsec = (long)(interval % 1000) * 1000000L };
			nanosleep(&ts, NULL);
			take(&v, &s[cur ^ 1]);
			frame(c, &v, &s[cur], &s[cur ^ 1], kr, er, (uint32_t)limit);
			cur ^= 1;
		}
	}
	for (int i = 0; i < 2; i++) {
		free(s[i].key_seq);
		free(s[i].ep_bytes);
	}
	free(kr);
	free(er);
	view_close(&v);
	return code;
}
