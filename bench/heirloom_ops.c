/* SPDX-License-Identifier: MIT */
/*
 * heirloom_ops: how fast the worker takes requests, and what the table
 * costs in memory.
 *
 * Series (scenario/variant, unit):
 *   publish-skip/heirloom      pub/s    one client publishes the value each of
 *                                       1,000 keys already has (skip path)
 *   publish-change/heirloom    pub/s    the same with a new value each time,
 *                                       nobody observing
 *   publish-observed/heirloom  pub/s    the same into 1,000 keys that each have
 *                                       one observer (in one other process,
 *                                       draining with hl_next)
 *   observe-pairs/heirloom     pairs/s  hl_observe (waits for its id) +
 *                                       hl_unobserve (of an id the client
 *                                       holds: queued, no wait); counted
 *                                       by the client after each pair, at
 *                                       most one unobserve unapplied (the
 *                                       next observe waits behind it)
 *   observe-pairs/heirloom-sync pairs/s the same from a client opened
 *                                       HL_OPEN_SYNC: both calls wait for
 *                                       the worker (two round trips)
 *   cas-increment/heirloom     cas/s    one client increments one counter
 *                                       key: hl_get + hl_publish_if on the
 *                                       revision read (always a round trip
 *                                       to the worker; uncontended, so
 *                                       never a conflict). Also prints the
 *                                       CPU per increment of the client and
 *                                       of the worker (getrusage, and
 *                                       /proc/PID/stat of the owner pid)
 *   publish-prefix/none        pub/s    publish-change again, in the same run
 *                                       as the next row, for an A/B
 *   publish-prefix/10k-unrelated pub/s  the same while another client of
 *                                       this process holds 10,000 prefix
 *                                       observers on prefixes no key of the
 *                                       loop starts with ("hb/px/<i>/", four
 *                                       lengths): the matching cost of a
 *                                       publish nobody observes (issue 14:
 *                                       within 10 % of none)
 *   publish-burst-idle/heirloom pub/s   publish-observed with an observer that
 *                                       reads in bursts (2 ms) and idles in
 *                                       between (8 ms): its event ring
 *                                       overflows again and again, and it
 *                                       is caught up from the history
 *                                       (issue 14, item 4)
 *   publish-burst-idle/lost-revisions rev  changes that observer never got
 *                                       (publishes applied while it observed
 *                                       less the events it took; LAGGED
 *                                       counts them too): 0 while the
 *                                       history holds what each idle period
 *                                       misses. A correctness figure, not a
 *                                       timing
 *   memory/segment             B/history-entry  a history record of one of
 *                                       these publishes (key 12 B, value
 *                                       16 B): 40 B of header + key + meta +
 *                                       value, rounded to 8 (overhead over
 *                                       the value: 40 B + key, <= 64 B for
 *                                       keys up to 24 bytes)
 *   memory/segment             B/prefix  a prefix observer on a prefix of its
 *                                       own: its entry (a key slot) and its
 *                                       observer slot; one more observer of
 *                                       that prefix costs B/observer
 *   memory/segment             B/observer, B/key   from the layout (ring space
 *                                       apart): what the segment reserves
 *   memory/worker-rss          B/observer  worker VmRSS growth per observer
 *                                       added (100,000 of them), which
 *                                       includes the segment pages it touched
 *   memory/worker-rss          B        worker VmRSS with them
 *   memory/worker-jemalloc     B/observer, B   the same from the worker's
 *                                       jemalloc stats.allocated
 *                                       (hl_stats.worker_mem_bytes, when
 *                                       the worker exports it)
 * Rates are per 10 ms window, counted by the worker (hl_stats), so they are
 * requests applied, not requests queued.
 *
 * It owns its observer process (harness.h); every loop is bounded.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "heirloom_common.h"
#include "layout.h"
#include "stats.h"

#define RATE_WINDOW_NS (10 * BENCH_NS_PER_MS)
#define NKEYS          1000u
#define MEM_OBSERVERS  100000u

static struct hl_client *pub;

static uint64_t
applied(void)
{
	struct hl_stats st;
	hl_stats(pub, &st);
	return st.publishes + st.skipped_unchanged;
}

static void
key_name(char *buf, size_t len, unsigned i)
{
	snprintf(buf, len, "hb/ops/%05u", i);
}

/* The keys' names, made once: the timed loops measure heirloom, not
 * snprintf. */
static char keys[NKEYS][16];

static int
publish_loop(const struct bench_opts *o, int change, struct stats_samples *out)
{
	uint64_t deadline = bench_rep_deadline(o), n = 0;
	static uint64_t gen = 1;
	struct bench_rate r;
	int err = 0;
	bench_rate_start(&r, RATE_WINDOW_NS, applied());
	while (err == 0) {
		for (unsigned k = 0; k < 64; k++, n++) {
			uint64_t v[2] = { change ? gen++ : 1, 0 };
			const char *key = keys[n % NKEYS];
			err = hl_publish(pub, key, strlen(key), v, sizeof(v), NULL, 0);
			if (err == -EAGAIN) {
				sched_yield();
				err = 0;
			}
			if (err)
				break;
		}
		if (stats_now_ns() > deadline)
			break;
		if (bench_rate_tick(&r, applied(), out) < 0)
			err = -ENOMEM;
	}
	int f = hl_flush(pub, 5000);
	return err ? err : f;
}

/* The observer of publish-observed: one observer on each key, drains. */
static int
observer_main(struct bench_board *b, uint64_t hard_ns)
{
	struct hl_client *c;
	char key[32];
	if (hlb_open(0, stats_now_ns() + 10 * BENCH_NS_PER_S, &c))
		return 10;
	for (unsigned i = 0; i < NKEYS; i++) {
		hl_observer_id id;
		key_name(key, sizeof(key), i);
		if (hl_observe(c, key, strlen(key), 0, &id))
			return 11;
	}
	bench_board_ready(b);
	uint64_t n = 0;
	while (!atomic_load_explicit(&b->stop, memory_order_relaxed) && stats_now_ns() < hard_ns) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 50);
		if (rc == 0) {
			atomic_store_explicit(&b->slot[0].count, ++n, memory_order_relaxed);
		} else if (rc != -ETIMEDOUT) {
			fprintf(stderr, "publish-observed: observer: hl_next: %s\n",
			        hl_strerror(rc));
			return 12;
		}
	}
	hl_close(c);
	return 0;
}

/* The observer of publish-burst-idle: one observer on each key; reads for
 * 2 ms, idles 8 ms, until told to stop; then takes everything left. Its
 * events go to slot 0's count; slot 0's recv_ns = 1 + the LAGGED counts
 * once it has taken everything (after the stop). */
static int
burst_observer_main(struct bench_board *b, uint64_t hard_ns)
{
	struct hl_client *c;
	char key[32];
	if (hlb_open(0, stats_now_ns() + 10 * BENCH_NS_PER_S, &c))
		return 10;
	for (unsigned i = 0; i < NKEYS; i++) {
		hl_observer_id id;
		key_name(key, sizeof(key), i);
		if (hl_observe(c, key, strlen(key), 0, &id))
			return 11;
	}
	bench_board_ready(b);
	uint64_t n = 0, lagged = 0;
	for (;;) {
		int stop = atomic_load_explicit(&b->stop, memory_order_acquire);
		uint64_t until = stats_now_ns() + 2 * BENCH_NS_PER_MS;
		int rc = 0;
		while (stop || stats_now_ns() < until) {
			struct hl_event ev;
			rc = hl_next(c, &ev, stop ? 200 : 0);
			if (rc)
				break;
			if (ev.type == HL_EV_LAGGED)
				lagged += ev.lagged;
			else if (ev.type == HL_EV_PUT || ev.type == HL_EV_DELETE)
				n++;
		}
		if (rc && rc != -EAGAIN && rc != -ETIMEDOUT) {
			fprintf(stderr, "publish-burst-idle: observer: hl_next: %s\n",
			        hl_strerror(rc));
			return 12;
		}
		atomic_store_explicit(&b->slot[0].count, n, memory_order_relaxed);
		if (stop)
			break;
		if (stats_now_ns() > hard_ns) {
			fprintf(stderr, "publish-burst-idle: observer: out of time\n");
			return 13;
		}
		struct timespec idle = { 0, 8 * BENCH_NS_PER_MS };
		nanosleep(&idle, NULL);
	}
	atomic_store_explicit(&b->slot[0].recv_ns, 1 + lagged, memory_order_release);
	hl_close(c);
	return 0;
}

static uint64_t burst_lost; /* publish-burst-idle: lost revisions, every rep */

static int
rep_publish(int variant, const struct bench_opts *o, struct stats_samples *out)
{
	char key[32];
	/* Every key exists with value 1 first, so the skip path is a skip. */
	for (unsigned i = 0; i < NKEYS; i++) {
		uint64_t v[2] = { 1, 0 };
		key_name(key, sizeof(key), i);
		int rc = hl_publish(pub, key, strlen(key), v, sizeof(v), NULL, 0);
		if (rc)
			return rc;
	}
	int err = hl_flush(pub, 5000);
	if (err)
		return err;
	if (variant < 2)
		return publish_loop(o, variant == 1, out);
	struct bench_board *b = bench_board_create(1);
	if (!b)
		return -errno;
	uint64_t hard = stats_now_ns() + o->budget_ns + 10 * BENCH_NS_PER_S;
	pid_t pid = bench_fork();
	if (pid == 0)
		_exit(variant == 3 ? burst_observer_main(b, hard) : observer_main(b, hard));
	if (pid < 0) {
		err = -errno;
		goto out;
	}
	err = bench_board_wait_ready(b, stats_now_ns() + 20 * BENCH_NS_PER_S);
	struct hl_stats st0, st1;
	hl_stats(pub, &st0);
	if (err == 0)
		err = publish_loop(o, 1, out);
	hl_stats(pub, &st1);
	atomic_store_explicit(&b->stop, 1, memory_order_release);
	if (variant == 3 && err == 0) {
		/* Every change it observed, taken or counted lost. */
		while (!atomic_load_explicit(&b->slot[0].recv_ns, memory_order_acquire) &&
		       stats_now_ns() < hard)
			usleep(1000);
		uint64_t want = st1.publishes - st0.publishes;
		uint64_t got = atomic_load_explicit(&b->slot[0].count, memory_order_relaxed);
		burst_lost += want > got ? want - got : 0;
		fprintf(stderr,
		        "publish-burst-idle: %llu changes, %llu events taken, %llu reported "
		        "lagged, %llu dropped from its ring and caught up\n",
		        (unsigned long long)want, (unsigned long long)got,
		        (unsigned long long)(atomic_load_explicit(&b->slot[0].recv_ns,
		                                                  memory_order_relaxed) -
		                             1),
		        (unsigned long long)(st1.lagged_drops - st0.lagged_drops));
	}
	if (bench_reap_all(stats_now_ns() + 5 * BENCH_NS_PER_S) > 0 && err == 0)
		err = -ECHILD;
out:
	bench_kill_all();
	bench_board_destroy(b);
	return err;
}

static int
rep_pairs(struct hl_client *cl, const struct bench_opts *o, struct stats_samples *out)
{
	uint64_t deadline = bench_rep_deadline(o), n = 0;
	struct bench_rate r;
	bench_rate_start(&r, RATE_WINDOW_NS, 0);
	while (stats_now_ns() < deadline) {
		for (unsigned k = 0; k < 32; k++) {
			hl_observer_id id;
			int rc = hl_observe(cl, "hb/pairs", 8, 0, &id);
			if (rc == 0)
				rc = hl_unobserve(cl, id);
			if (rc)
				return rc;
			n++;
		}
		if (bench_rate_tick(&r, n, out) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Compare-and-set increments of one key, read + CAS per increment. */
static int
rep_cas(struct hl_client *cl, const struct bench_opts *o, struct stats_samples *out)
{
	uint64_t deadline = bench_rep_deadline(o), n = 0;
	struct hl_stats st;
	int rc = hl_stats(cl, &st);
	if (rc)
		return rc;
	uint64_t w0 = bench_proc_cpu_ns(st.owner_pid), c0 = bench_self_cpu_ns(),
	         t0 = stats_now_ns();
	struct bench_rate r;
	bench_rate_start(&r, RATE_WINDOW_NS, 0);
	while (stats_now_ns() < deadline) {
		for (unsigned k = 0; k < 32; k++) {
			uint64_t v = 0, rev = 0;
			size_t len = 0;
			rc = hl_get(cl, "hb/cas", 6, &v, sizeof(v), &len, &rev);
			if (rc == -ENOENT)
				rev = 0;
			else if (rc)
				return rc;
			v++;
			rc = hl_publish_if(cl, "hb/cas", 6, &v, sizeof(v), NULL, 0, rev, NULL);
			if (rc)
				return rc;
			n++;
		}
		if (bench_rate_tick(&r, n, out) < 0)
			return -ENOMEM;
	}
	uint64_t dt = stats_now_ns() - t0, w1 = bench_proc_cpu_ns(st.owner_pid),
	         c1 = bench_self_cpu_ns();
	fprintf(stderr,
	        "cas-increment: %llu increments in %.3f s: %.0f ns per round trip; CPU per "
	        "increment: client %.0f ns, worker %.0f ns (clock ticks of %ld Hz)\n",
	        (unsigned long long)n, (double)dt / 1e9, n ? (double)dt / (double)n : 0.0,
	        n ? (double)(c1 - c0) / (double)n : 0.0,
	        n && w0 && w1 ? (double)(w1 - w0) / (double)n : 0.0, sysconf(_SC_CLK_TCK));
	return 0;
}

/* which: 0..2 the publish series (rep_publish), 3 pairs from `pub`, 4 pairs
 * from a client of its own opened HL_OPEN_SYNC, 5 CAS increments, 6
 * publish-burst-idle (rep_publish's variant 3). */
static int
run_series(const char *scenario, const char *variant, const char *unit, int which,
           const struct bench_opts *o)
{
	struct bench_series s;
	struct hl_client *cl = pub;
	int err = 0;
	if (!bench_wanted(o, scenario, variant))
		return 0;
	if (which == 4) {
		err = hlb_open(HL_OPEN_SYNC, stats_now_ns() + 20 * BENCH_NS_PER_S, &cl);
		if (err) {
			fprintf(stderr, "%s/%s: %s\n", scenario, variant, hl_strerror(err));
			return err;
		}
	}
	bench_series_init(&s, scenario, variant, STATS_RATE, unit);
	for (unsigned r = 0; r < o->reps && err == 0; r++) {
		struct stats_samples rep;
		stats_init(&rep);
		err = which < 3 || which == 6 ? rep_publish(which == 6 ? 3 : which, o, &rep)
		      : which == 5            ? rep_cas(cl, o, &rep)
		                              : rep_pairs(cl, o, &rep);
		if (err == 0)
			err = bench_series_add_rep(&s, &rep);
		stats_fini(&rep);
	}
	if (err < 0)
		fprintf(stderr, "%s/%s: %s\n", scenario, variant, hl_strerror(err));
	bench_series_report(&s, o);
	bench_series_fini(&s);
	if (cl != pub)
		hl_close(cl);
	return err;
}

#define PREFIX_OBSERVERS 10000u

/* The 10,000 unrelated prefix observers of publish-prefix/10k-unrelated,
 * held by a client of their own until *HOLDER is closed. */
static int
add_prefix_observers(struct hl_client **holder)
{
	int err = hlb_open(0, stats_now_ns() + 20 * BENCH_NS_PER_S, holder);
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	char p[32];
	for (unsigned i = 0; i < PREFIX_OBSERVERS && err == 0; i++) {
		int n = snprintf(p, sizeof(p), "hb/px/%u/", i);
		hl_observer_id id;
		err = hl_observe_with(*holder, p, (size_t)n, &po, &id);
	}
	return err;
}

static int
run_prefix(const struct bench_opts *o)
{
	int failed = run_series("publish-prefix", "none", "pub/s", 1, o) < 0;
	if (!bench_wanted(o, "publish-prefix", "10k-unrelated"))
		return failed ? -1 : 0;
	struct hl_client *holder = NULL;
	int err = add_prefix_observers(&holder);
	if (err)
		fprintf(stderr, "publish-prefix: adding prefix observers: %s\n", hl_strerror(err));
	else
		failed |= run_series("publish-prefix", "10k-unrelated", "pub/s", 1, o) < 0;
	if (holder)
		hl_close(holder);
	return failed || err ? -1 : 0;
}

/* One-sample rows: the figure is computed, not sampled. */
static void
report_value(const struct bench_opts *o, const char *scenario, const char *variant,
             const char *unit, uint64_t v)
{
	struct bench_series s;
	struct stats_samples one;
	bench_series_init(&s, scenario, variant, STATS_RATE, unit);
	stats_init(&one);
	stats_add(&one, v);
	bench_series_add_rep(&s, &one);
	bench_series_report(&s, o);
	stats_fini(&one);
	bench_series_fini(&s);
}

/* The worker's jemalloc stats.allocated (hl_stats.worker_mem_bytes), after
 * a refresh: the worker samples it about once a second. 0 = not exported. */
static uint64_t
jemalloc_bytes(void)
{
	struct hl_stats st;
	struct timespec ts = { 1, 200000000 };
	nanosleep(&ts, NULL);
	if (hl_stats(pub, &st))
		return 0;
	return st.worker_mem_bytes;
}

static int
run_memory(const struct bench_opts *o)
{
	if (!bench_wanted(o, "memory", "segment") && !bench_wanted(o, "memory", "worker-rss"))
		return 0;
	/* From the layout of a segment with the default capacities: the
	 * observer and key regions over their capacities (pages rounded). */
	struct hl_layout_params p = { 0 };
	struct hl_shm_header h;
	if (hl__layout_defaults(&p) || hl__layout_compute(&p, &h))
		return -EINVAL;
	uint64_t per_obs = (h.heap_off - h.observers_off) / h.max_observers;
	uint64_t per_key = (h.observers_off - h.buckets_off) / h.max_keys;
	report_value(o, "memory", "segment", "B/observer", per_obs);
	report_value(o, "memory", "segment", "B/key", per_key);
	report_value(o, "memory", "segment", "B/prefix", per_key + per_obs);
	/* One history record of the publishes above (key "hb/ops/00000",
	 * a 16-byte value, no meta). */
	report_value(o, "memory", "segment", "B/history-entry",
	             hl__hist_rec_bytes((uint32_t)strlen(keys[0]), 0, 16));
	/* The whole default segment, reserved in /dev/shm at creation (issue
	 * 21: it must fit Docker's 64 MiB); the benchmarks themselves run
	 * with HLB_CAPACITIES. */
	report_value(o, "memory", "segment", "B default", h.size);

	pid_t w = hlb_worker_pid(pub);
	uint64_t before = hlb_rss_bytes(w);
	uint64_t je_before = jemalloc_bytes();
	hl_observer_id *ids = malloc(MEM_OBSERVERS * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	char key[32];
	unsigned n = 0;
	int err = 0;
	for (; n < MEM_OBSERVERS && err == 0; n++) {
		key_name(key, sizeof(key), n % NKEYS);
		err = hl_observe(pub, key, strlen(key), 0, &ids[n]);
	}
	uint64_t after = hlb_rss_bytes(w);
	uint64_t je_after = jemalloc_bytes();
	if (err == 0 && before && after) {
		report_value(o, "memory", "worker-rss", "B/observer",
		             after > before ? (after - before) / MEM_OBSERVERS : 0);
		report_value(o, "memory", "worker-rss", "B", after);
	}
	if (err == 0 && je_before && je_after) {
		report_value(o, "memory", "worker-jemalloc", "B/observer",
		             je_after > je_before ? (je_after - je_before) / MEM_OBSERVERS : 0);
		report_value(o, "memory", "worker-jemalloc", "B", je_after);
	}
	for (unsigned i = 0; i + 1 < n; i++)
		hl_unobserve(pub, ids[i]);
	free(ids);
	return err;
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse_args(argc, argv, &o);
	for (unsigned i = 0; i < NKEYS; i++)
		key_name(keys[i], sizeof(keys[i]), i);
	int rc = hlb_setup();
	if (rc == 0)
		rc = hlb_open(0, stats_now_ns() + 20 * BENCH_NS_PER_S, &pub);
	if (rc) {
		fprintf(stderr, "heirloom_ops: no worker serving '%s': %s\n", hlb_name(),
		        hl_strerror(rc));
		return 1;
	}
	bench_install_guards((unsigned)(120 + 4 * o.reps * (o.budget_ns / BENCH_NS_PER_S + 5)));
	stats_print_header(stdout);
	int failed = 0;
	failed |= run_series("publish-skip", "heirloom", "pub/s", 0, &o) < 0;
	failed |= run_series("publish-change", "heirloom", "pub/s", 1, &o) < 0;
	failed |= run_series("publish-observed", "heirloom", "pub/s", 2, &o) < 0;
	failed |= run_series("observe-pairs", "heirloom", "pairs/s", 3, &o) < 0;
	failed |= run_series("observe-pairs", "heirloom-sync", "pairs/s", 4, &o) < 0;
	failed |= run_series("cas-increment", "heirloom", "cas/s", 5, &o) < 0;
	if (bench_wanted(&o, "publish-burst-idle", "heirloom")) {
		failed |= run_series("publish-burst-idle", "heirloom", "pub/s", 6, &o) < 0;
		report_value(&o, "publish-burst-idle", "lost-revisions", "rev", burst_lost);
	}
	failed |= run_prefix(&o) < 0;
	failed |= run_memory(&o) < 0;
	hl_close(pub);
	hlb_teardown();
	return failed;
}
