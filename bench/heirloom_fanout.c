/* SPDX-License-Identifier: MIT */
/*
 * heirloom_fanout: one publish to N observers of one key, spread over 8
 * observer processes (N = 1, 100, 10,000, 100,000; fewer processes when
 * N < 8), one message at a time.
 *
 * Series (scenario fanout-obsN, variant; all latencies from ev.timestamp_ns,
 * when hl_publish() queued the request):
 *   heirloom-written   until every process has its events in its ring: the
 *                      latest of the processes' receive times of their FIRST
 *                      event. The worker commits one endpoint's records in
 *                      one store, so a process that sees one event has them
 *                      all; this upper bound adds the last process's wake-up.
 *   heirloom-last      until the last observer has its event: the latest of
 *                      the processes' receive times of their LAST event
 *   heirloom-dispatch  the worker's own time from "publish applied" to "last
 *                      event written" (hl_stats.dispatch_hist: the bucket this
 *                      publish landed in, reported as its upper bound, so a
 *                      power of two: coarse, and excluding the first hop)
 * and DIR/scaling/<variant>.dat: "N ns-per-observer" (p50 / N) for the plot
 * of per-observer cost (scripts/bench).
 *
 * It owns its observer processes (harness.h); every wait is bounded.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "heirloom_common.h"
#include "stats.h"

#define PROCS    8u
#define STOP_SEQ UINT64_MAX
#define GRACE_NS (20 * BENCH_NS_PER_S)
#define WARMUP   3u

static const uint32_t counts[] = { 1, 100, 10000, 100000 };

struct shared {
	_Alignas(64) _Atomic uint64_t ts;
	struct {
		_Alignas(64) _Atomic uint64_t first_ns;
	} p[PROCS];
};

static struct hl_client *pub;

static int
observer_main(uint32_t idx, uint32_t nobs, const char *key, struct bench_board *b,
              struct shared *sh, uint64_t hard_ns)
{
	struct hl_client *c;
	if (hlb_open(0, stats_now_ns() + 10 * BENCH_NS_PER_S, &c))
		return 10;
	for (uint32_t i = 0; i < nobs; i++) {
		hl_observer_id id;
		if (hl_observe(c, key, strlen(key), 0, &id))
			return 11;
	}
	bench_board_ready(b);
	uint32_t got = 0;
	uint64_t first = 0;
	for (;;) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 50);
		if (rc == -ETIMEDOUT) {
			if (atomic_load_explicit(&b->stop, memory_order_relaxed) ||
			    stats_now_ns() > hard_ns)
				break;
			continue;
		}
		if (rc < 0)
			return 13;
		if (ev.type != HL_EV_PUT || ev.new_len != 8)
			continue; /* LAGGED/RESYNC cannot happen one message at a time */
		uint64_t seq, now = 0;
		memcpy(&seq, ev.new_value, 8);
		if (seq == STOP_SEQ)
			break;
		/* The clock only where a stamp is kept: a read per event would
		 * be a large part of the expansion measured. */
		if (got == 0 || got + 1 == nobs)
			now = stats_now_ns();
		if (got++ == 0)
			first = now;
		if (got == nobs) {
			got = 0;
			atomic_store_explicit(&sh->ts, ev.timestamp_ns, memory_order_relaxed);
			atomic_store_explicit(&sh->p[idx].first_ns, first, memory_order_relaxed);
			bench_board_ack(b, idx, now);
		}
	}
	hl_close(c);
	return 0;
}

static uint64_t
hist_total(const struct hl_stats *st, unsigned i)
{
	return st->dispatch_hist[i];
}

/* One repetition for N observers: fork, observe, measure, stop. */
static int
rep(uint32_t n, const struct bench_opts *o, struct stats_samples *written,
    struct stats_samples *last, struct stats_samples *disp)
{
	static unsigned rep_no;
	uint32_t procs = n < PROCS ? n : PROCS;
	char key[48];
	int err = 0;
	snprintf(key, sizeof(key), "hb/fanout/%u/%u", n, rep_no++);
	struct bench_board *b = bench_board_create(procs);
	if (!b)
		return -errno;
	struct shared *sh =
	        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_board_destroy(b);
		return -errno;
	}
	uint64_t hard = stats_now_ns() + o->budget_ns + GRACE_NS;
	for (uint32_t i = 0; i < procs; i++) {
		uint32_t nobs = n / procs + (i < n % procs);
		pid_t pid = bench_fork();
		if (pid == 0)
			_exit(observer_main(i, nobs, key, b, sh, hard));
		if (pid < 0) {
			err = -errno;
			goto out_kill;
		}
	}
	err = bench_board_wait_ready(b, stats_now_ns() + GRACE_NS);
	if (err < 0)
		goto out_kill;
	uint64_t deadline = bench_rep_deadline(o);
	for (uint64_t i = 0; i < o->iters + WARMUP && stats_now_ns() < deadline; i++) {
		struct hl_stats s0, s1;
		uint64_t recv, seq = i;
		hl_stats(pub, &s0);
		bench_board_arm(b);
		err = hl_publish(pub, key, strlen(key), &seq, 8, NULL, 0);
		if (err == 0)
			err = bench_board_wait_acks(b, deadline + GRACE_NS, BENCH_POLL_NS, &recv);
		if (err < 0)
			goto out_kill;
		if (i < WARMUP)
			continue;
		uint64_t ts = atomic_load_explicit(&sh->ts, memory_order_relaxed), wr = 0;
		for (uint32_t p = 0; p < procs; p++) {
			uint64_t f = atomic_load_explicit(&sh->p[p].first_ns, memory_order_relaxed);
			wr = f > wr ? f : wr;
		}
		stats_add(written, wr > ts ? wr - ts : 0);
		stats_add(last, recv > ts ? recv - ts : 0);
		/* The dispatch histogram moved by one for this publish (the
		 * bench is the only publisher); hl_stats sums all shards. */
		hl_stats(pub, &s1);
		for (unsigned h = 0; h < 16; h++)
			if (hist_total(&s1, h) > hist_total(&s0, h)) {
				stats_add(disp, 1ull << (h + 7));
				break;
			}
	}
	uint64_t stop = STOP_SEQ;
	err = hl_publish(pub, key, strlen(key), &stop, 8, NULL, 0);
	if (err < 0)
		goto out_kill;
	if (bench_reap_all(stats_now_ns() + GRACE_NS) > 0)
		err = -ECHILD;
	goto out;
out_kill:
	atomic_store_explicit(&b->stop, 1, memory_order_relaxed);
	bench_kill_all();
out:
	munmap(sh, sizeof(*sh));
	bench_board_destroy(b);
	return err;
}

static void
scaling_point(const struct bench_opts *o, const char *variant, uint32_t n,
              const struct stats_samples *s)
{
	char path[512];
	if (!o->out_dir || s->n == 0)
		return;
	snprintf(path, sizeof(path), "%s/scaling", o->out_dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/scaling/%s.dat", o->out_dir, variant);
	FILE *f = fopen(path, n == counts[0] ? "w" : "a");
	if (!f)
		return;
	fprintf(f, "%u %.1f\n", n, (double)stats_median(s) / n);
	fclose(f);
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse_args(argc, argv, &o);
	/* Messages are heavy here (up to 100,000 events each). */
	if (o.iters > (o.quick ? 50u : 300u))
		o.iters = o.quick ? 50u : 300u;
	int rc = hlb_setup();
	if (rc == 0)
		rc = hlb_open(0, stats_now_ns() + 20 * BENCH_NS_PER_S, &pub);
	if (rc) {
		fprintf(stderr, "heirloom_fanout: no worker serving '%s': %s\n", hlb_name(),
		        hl_strerror(rc));
		return 1;
	}
	bench_install_guards((unsigned)(60 + 4 * 4 * o.reps * (o.budget_ns / BENCH_NS_PER_S + 25)));
	stats_print_header(stdout);
	int failed = 0;
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		static char names[4][32];
		uint32_t n = counts[k];
		snprintf(names[k], sizeof(names[k]), "fanout-obs%u", n);
		if (!bench_wanted(&o, names[k], "heirloom"))
			continue;
		struct bench_series sw, sl, sd;
		bench_series_init(&sw, names[k], "heirloom-written", STATS_LATENCY, "ns");
		bench_series_init(&sl, names[k], "heirloom-last", STATS_LATENCY, "ns");
		bench_series_init(&sd, names[k], "heirloom-dispatch", STATS_LATENCY, "ns");
		int err = 0;
		for (unsigned r = 0; r < o.reps && err == 0; r++) {
			struct stats_samples w, l, d;
			stats_init(&w);
			stats_init(&l);
			stats_init(&d);
			err = rep(n, &o, &w, &l, &d);
			if (err == 0)
				err = bench_series_add_rep(&sw, &w);
			if (err == 0)
				err = bench_series_add_rep(&sl, &l);
			if (err == 0)
				err = bench_series_add_rep(&sd, &d);
			stats_fini(&w);
			stats_fini(&l);
			stats_fini(&d);
		}
		if (err < 0) {
			fprintf(stderr, "%s/heirloom: %s\n", names[k], hl_strerror(err));
			failed = 1;
		}
		bench_series_report(&sw, &o);
		bench_series_report(&sl, &o);
		bench_series_report(&sd, &o);
		scaling_point(&o, "heirloom-written", n, &sw.all);
		scaling_point(&o, "heirloom-last", n, &sl.all);
		scaling_point(&o, "heirloom-dispatch", n, &sd.all);
		bench_series_fini(&sw);
		bench_series_fini(&sl);
		bench_series_fini(&sd);
	}
	hl_close(pub);
	hlb_teardown();
	return failed;
}
