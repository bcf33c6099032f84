/* SPDX-License-Identifier: MIT */
/*
 * heirloom_latency: heirloom through its public API against the baselines'
 * own scenarios, in their terms (bench/README.md): one publisher process
 * (this one), observer processes forked per repetition, the same ack board.
 *
 * Series (scenario/variant):
 *   steady/heirloom          one observer process blocking in hl_next(); one
 *                            publish every ~20 us after the previous event
 *                            arrived; latency = receive - ev.timestamp_ns
 *   steady/heirloom-poll     the same, observer busy-polls hl_next(c, &ev, 0)
 *                            (and yields every 1,024 empty polls, as ring-spin)
 *   steady/heirloom-spin     the same, blocking hl_next() with
 *                            hl_open_opts.spin_us = 50 (spin, then sleep)
 *   steady/heirloom-b2b      blocking, the next publish right after the event
 *                            (back to back, no pacing)
 *   steady/heirloom-10k-prefixes   steady/heirloom while a client of this
 *                            process holds 10,000 prefix observers on
 *                            prefixes the key does not start with
 *                            ("hb/px/<i>/"): the 1->1 latency cost of
 *                            prefix matching (issue 14: within 10 %)
 *   fanout8/heirloom, fanout64/heirloom
 *                            one observer in each of 8 / 64 processes; latency
 *                            to the last one
 *   burst/heirloom           publishes back to back, at most WINDOW not yet
 *                            received; msg/s per 10 ms window at the observer
 *   burst/heirloom-spin      the same, observer with spin_us = 50
 *   burst-fanout8/heirloom, burst-fanout64/heirloom   the same to 8 / 64
 *                            processes: msg/s and ev/s
 *   burst-batch64/heirloom   64 observers of the key in ONE process (one
 *                            batched record per publish): msg/s and ev/s
 *
 * The publisher's stamp is the one heirloom carries: each observer copies
 * ev.timestamp_ns (CLOCK_MONOTONIC when hl_publish() queued the request) to
 * the board's stamp; latency = the last observer's receive time - that
 * stamp. Pacing and CPU accounting are the baselines' own (harness.h,
 * bench_steady_run); the CPU column counts the worker and its keeper.
 *
 * HEIRLOOM_BENCH_TAG=T (scripts/bench sets it when it runs this binary
 * again against a worker started with other options, e.g. --spin-us 0):
 * only steady, fanout8, fanout64 and burst, as variant "heirloom-T".
 *
 * It owns the observer processes (harness.h) and must never leave one
 * running; every wait is bounded.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "heirloom_common.h"
#include "stats.h"

#define RATE_WINDOW_NS    (10 * BENCH_NS_PER_MS)
#define OBS_POLL_MS       50
#define CONSUMER_GRACE_NS (10 * BENCH_NS_PER_S)
/* Burst: publishes not yet received by the slowest observer process. Below
 * what one event ring holds (256 KiB / ~120 B records), so a fast publisher
 * measures delivery, not dropped events (bl_redis keeps 1024 too). */
#define WINDOW 1024u
/* Burst: publishes per look at the clock and the board, and events an
 * observer counts before it posts its count (bl_futex_ring's BURST_BATCH). */
#define BURST_BATCH 64u
#define STOP_SEQ    UINT64_MAX
#define MAX_PROCS   64

/* What one scenario row runs: indexed by bench_scenario.param. */
struct variant {
	uint32_t procs;    /* observer processes */
	uint32_t per_proc; /* observers of the key in each */
	int poll;          /* hl_next(c, &ev, 0) busy loop */
	int spin_us;       /* hl_open_opts.spin_us of the observer */
	int paced;         /* steady: 20 us between stamps */
	uint32_t prefixes; /* unrelated prefix observers held meanwhile */
};

/* One variant a line: the tables are read, not formatted. */
/* clang-format off */
enum { V_STEADY, V_POLL, V_SPIN, V_B2B, V_FAN8, V_FAN64, V_BURST, V_BSPIN, V_BFAN8, V_BFAN64,
       V_BATCH, V_PFX };

static const struct variant variants[] = {
	/*            procs  per_proc  poll  spin_us  paced  prefixes */
	[V_STEADY] = {1,     1,        0,    0,       1,     0},
	[V_POLL]   = {1,     1,        1,    0,       1,     0},
	[V_SPIN]   = {1,     1,        0,    50,      1,     0},
	[V_B2B]    = {1,     1,        0,    0,       0,     0},
	[V_FAN8]   = {8,     1,        0,    0,       1,     0},
	[V_FAN64]  = {64,    1,        0,    0,       1,     0},
	[V_BURST]  = {1,     1,        0,    0,       0,     0},
	[V_BSPIN]  = {1,     1,        0,    50,      0,     0},
	[V_BFAN8]  = {8,     1,        0,    0,       0,     0},
	[V_BFAN64] = {64,    1,        0,    0,       0,     0},
	[V_BATCH]  = {1,     64,       0,    0,       0,     0},
	[V_PFX]    = {1,     1,        0,    0,       1,     10000},
};

static const struct bench_scenario scenarios[] = {
	{"steady", "heirloom", 0, 1, V_STEADY},
	{"steady", "heirloom-poll", 0, 1, V_POLL},
	{"steady", "heirloom-spin", 0, 1, V_SPIN},
	{"steady", "heirloom-b2b", 0, 1, V_B2B},
	{"steady", "heirloom-10k-prefixes", 0, 1, V_PFX},
	{"fanout8", "heirloom", 0, 8, V_FAN8},
	{"fanout64", "heirloom", 0, 64, V_FAN64},
	{"burst", "heirloom", 1, 1, V_BURST},
	{"burst", "heirloom-spin", 1, 1, V_BSPIN},
	{"burst-fanout8", "heirloom", 1, 8, V_BFAN8},
	{"burst-fanout64", "heirloom", 1, 64, V_BFAN64},
	{"burst-batch64", "heirloom", 1, 64, V_BATCH},
};
/* clang-format on */

/* Shared with the observers, besides the board. */
struct shared {
	/* Events dropped for lag (LAGGED counts), summed by all observers. */
	_Alignas(64) _Atomic uint64_t lagged;
};

static struct hl_client *pub; /* the publisher's client, for the whole run */
static const char *key_now;   /* the key of the repetition running */

struct msg {
	uint64_t seq;
	uint64_t pad;
};

/* An observer process. BURST: count events only, as bl_futex_ring's
 * consumer does in a burst (no receive time, no ack), and post the count
 * when the rings run dry or every BURST_BATCH events, as that consumer
 * posts its tail once per batch it finds. */
static int
observer_main(const struct variant *v, uint32_t idx, struct bench_board *b, struct shared *sh,
              const char *key, int burst, uint64_t hard_ns)
{
	struct hl_client *c;
	int rc = hlb_open(0, stats_now_ns() + 10 * BENCH_NS_PER_S, &c);
	if (rc)
		return 10;
	if (v->spin_us) {
		/* Reopen with the spin option (hlb_open uses defaults). */
		hl_close(c);
		struct hl_open_opts so = { .timeout_ms = 5000, .spin_us = (uint32_t)v->spin_us };
		if (hl_open(hlb_name(), &so, &c))
			return 11;
	}
	for (uint32_t i = 0; i < v->per_proc; i++) {
		hl_observer_id id;
		if (hl_observe(c, key, strlen(key), 0, &id))
			return 12;
	}
	bench_board_ready(b);
	uint64_t got = 0, count = 0;
	unsigned idle = 0;
	for (;;) {
		struct hl_event ev;
		rc = burst ? hl_next(c, &ev, 0) : -EAGAIN;
		if (rc == -EAGAIN) {
			/* Dry (or not a burst): the count is posted before a wait. */
			atomic_store_explicit(&b->slot[idx].count, count, memory_order_relaxed);
			rc = hl_next(c, &ev, v->poll ? 0 : OBS_POLL_MS);
		}
		if (rc == -EAGAIN || rc == -ETIMEDOUT) {
			/* A poller gives the core away now and then, as
			 * ring-spin does: on 2 cores the worker may need it. */
			if (v->poll && ++idle % 1024)
				continue;
			if (v->poll)
				sched_yield();
			if (atomic_load_explicit(&b->stop, memory_order_relaxed) ||
			    stats_now_ns() > hard_ns)
				break;
			continue;
		}
		if (rc < 0)
			return 13;
		uint64_t now = burst ? 0 : stats_now_ns();
		if (ev.type == HL_EV_LAGGED) {
			atomic_fetch_add_explicit(&sh->lagged, ev.lagged, memory_order_relaxed);
			continue;
		}
		if (ev.type != HL_EV_PUT || ev.new_len != sizeof(struct msg))
			continue;
		struct msg m;
		memcpy(&m, ev.new_value, sizeof(m));
		if (m.seq == STOP_SEQ)
			break;
		count++;
		if (burst) {
			if (count % BURST_BATCH == 0)
				atomic_store_explicit(&b->slot[idx].count, count,
				                      memory_order_relaxed);
			continue;
		}
		atomic_store_explicit(&b->slot[idx].count, count, memory_order_relaxed);
		if (++got == v->per_proc) {
			got = 0;
			atomic_store_explicit(&b->stamp, ev.timestamp_ns, memory_order_relaxed);
			bench_board_ack(b, idx, now);
		}
	}
	hl_close(c);
	return 0;
}

static int
publish(const char *key, uint64_t seq)
{
	struct msg m = { .seq = seq, .pad = 0x6865697266f6f6dull };
	int rc;
	/* The request ring has room for ~2000 of these; a full one waits. */
	while ((rc = hl_publish(pub, key, strlen(key), &m, sizeof(m), NULL, 0)) == -EAGAIN)
		sched_yield();
	return rc;
}

/* bench_send_fn: one publish; the stamp is heirloom's own (the board's). */
static int
send_publish(void *ctx, uint64_t seq, uint64_t stamp)
{
	uint64_t *next = ctx;

	(void)seq;
	(void)stamp;
	return publish(key_now, (*next)++);
}

static uint64_t
min_count(struct bench_board *b)
{
	uint64_t m = UINT64_MAX;
	for (uint32_t i = 0; i < b->n; i++) {
		uint64_t c = atomic_load_explicit(&b->slot[i].count, memory_order_relaxed);
		if (c < m)
			m = c;
	}
	return m;
}

static int
run_burst(const struct variant *v, const struct bench_opts *o, const char *key,
          struct bench_board *b, struct bench_rep_out *out, uint64_t *seq)
{
	uint64_t deadline = bench_rep_deadline(o), sent = 0;
	uint64_t per_msg = (uint64_t)v->procs * v->per_proc;
	struct bench_rate rm, re;
	unsigned spins = 0;
	int err = 0;
	bench_rate_start(&rm, RATE_WINDOW_NS, 0);
	bench_rate_start(&re, RATE_WINDOW_NS, 0);
	bench_cpu_begin(out);
	/* A batched record is ~8 B an observer bigger: fewer fit. */
	const uint64_t window = v->per_proc > 1 ? WINDOW / 4 : WINDOW;
	while (err == 0) {
		uint64_t now = stats_now_ns();
		if (now > deadline)
			break;
		/* Per-process counts are events: per_proc of them a message. */
		uint64_t done = min_count(b) / v->per_proc;
		/* Up to BURST_BATCH publishes per look at the clock and the
		 * board, as bl_futex_ring's producer pushes a batch per look. */
		uint64_t room = window - (sent - done < window ? sent - done : window);
		if (room) {
			for (uint64_t k = 0; k < room && k < BURST_BATCH && err == 0; k++) {
				err = publish(key, (*seq)++);
				sent++;
			}
		} else if (++spins % 64 == 0) {
			/* 2 cores: the worker or an observer may need ours. */
			sched_yield();
			if (spins % 65536 == 0 && bench_check_children() < 0)
				err = -ECHILD;
		}
		uint64_t ev = bench_board_count(b);
		if (bench_rate_tick(&rm, ev / per_msg, &out->msg) < 0 ||
		    bench_rate_tick(&re, ev, &out->ev) < 0)
			err = -ENOMEM;
	}
	bench_cpu_end(out, bench_board_count(b) / per_msg);
	return err;
}

/* V->prefixes prefix observers on "hb/px/<i>/", held by a client of this
 * process until *HOLDER is closed (NULL when none are wanted). */
static int
hold_prefixes(const struct variant *v, struct hl_client **holder)
{
	*holder = NULL;
	if (!v->prefixes)
		return 0;
	int err = hlb_open(0, stats_now_ns() + 20 * BENCH_NS_PER_S, holder);
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	char p[32];
	for (uint32_t i = 0; i < v->prefixes && err == 0; i++) {
		int n = snprintf(p, sizeof(p), "hb/px/%u/", (unsigned)i);
		hl_observer_id id;
		err = hl_observe_with(*holder, p, (size_t)n, &po, &id);
	}
	return err;
}

static int
run_rep(const struct bench_scenario *sc, const struct bench_opts *o, struct bench_rep_out *out)
{
	const struct variant *v = &variants[sc->param];
	static uint64_t seq = 1;
	static unsigned rep_no;
	char key[64];
	int err = 0, failed;
	/* A fresh key per repetition: observers of earlier ones are gone. */
	snprintf(key, sizeof(key), "hb/%s/%s/%u", sc->name, sc->variant, rep_no++);
	struct bench_board *b = bench_board_create(v->procs);
	if (!b)
		return -errno;
	struct shared *sh =
	        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		bench_board_destroy(b);
		return -errno;
	}
	struct hl_client *holder;
	err = hold_prefixes(v, &holder);
	if (err < 0) {
		fprintf(stderr, "%s/%s: prefix observers: %s\n", sc->name, sc->variant,
		        hl_strerror(err));
		goto out;
	}
	uint64_t hard = stats_now_ns() + o->budget_ns + CONSUMER_GRACE_NS;
	for (uint32_t i = 0; i < v->procs; i++) {
		pid_t pid = bench_fork();
		if (pid == 0)
			_exit(observer_main(v, i, b, sh, key, sc->burst, hard));
		if (pid < 0) {
			err = -errno;
			goto out_kill;
		}
	}
	err = bench_board_wait_ready(b, stats_now_ns() + 20 * BENCH_NS_PER_S);
	if (err < 0)
		goto out_kill;
	key_now = key;
	if (sc->burst)
		err = run_burst(v, o, key, b, out, &seq);
	else
		err = bench_steady_run(o, b,
		                       BENCH_STEADY_BOARD_STAMP | (v->paced ? 0 : BENCH_STEADY_B2B),
		                       send_publish, &seq, out);
	if (err < 0)
		goto out_kill;
	err = publish(key, STOP_SEQ);
	if (err < 0)
		goto out_kill;
	failed = bench_reap_all(stats_now_ns() + 5 * BENCH_NS_PER_S);
	if (failed > 0) {
		fprintf(stderr, "%s/%s: %d observer(s) failed\n", sc->name, sc->variant, failed);
		err = -ECHILD;
	}
	if (atomic_load(&sh->lagged))
		fprintf(stderr, "%s/%s: %lu events dropped for lag\n", sc->name, sc->variant,
		        (unsigned long)atomic_load(&sh->lagged));
	goto out;
out_kill:
	atomic_store_explicit(&b->stop, 1, memory_order_relaxed);
	bench_kill_all();
out:
	if (holder)
		hl_close(holder);
	munmap(sh, sizeof(*sh));
	bench_board_destroy(b);
	return err;
}

/* Issue 16: the worker's CPU while nothing happens (this process's client
 * stays attached), in parts per million of one core over 10 s (2 s with
 * --quick): one sample, row idle/VARIANT, unit ppm (5,000 = 0.5 %). */
static void
run_idle(const struct bench_opts *o, const char *variant)
{
	uint64_t span = (o->quick ? 2 : 10) * BENCH_NS_PER_S;
	pid_t w = hlb_worker_pid(pub);
	struct bench_series s;
	struct stats_samples one;
	if (w <= 0 || !bench_wanted(o, "idle", variant))
		return;
	bench_series_init(&s, "idle", variant, STATS_RATE, "ppm");
	stats_init(&one);
	uint64_t c0 = bench_proc_cpu_ns(w), t0 = stats_now_ns();
	struct timespec ts = { .tv_sec = (time_t)(span / BENCH_NS_PER_S) };
	nanosleep(&ts, NULL);
	uint64_t c1 = bench_proc_cpu_ns(w), t1 = stats_now_ns();
	if (c1 >= c0 && stats_add(&one, (c1 - c0) * 1000000u / (t1 - t0)) == 0 &&
	    bench_series_add_rep(&s, &one) == 0)
		bench_series_report(&s, o);
	stats_fini(&one);
	bench_series_fini(&s);
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse_args(argc, argv, &o);
	int rc = hlb_setup();
	if (rc == 0)
		rc = hlb_open(0, stats_now_ns() + 20 * BENCH_NS_PER_S, &pub);
	if (rc) {
		fprintf(stderr, "heirloom_latency: no worker serving '%s': %s\n", hlb_name(),
		        hl_strerror(rc));
		return 1;
	}
	hlb_watch_daemons(pub);
	/* Against a worker with other options: the main rows, renamed. */
	const char *tag = getenv("HEIRLOOM_BENCH_TAG");
	struct bench_scenario tagged[4];
	static char name[32];
	size_t n = 0;
	if (tag && *tag) {
		snprintf(name, sizeof(name), "heirloom-%s", tag);
		for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
			int p = scenarios[i].param;
			if (p != V_STEADY && p != V_FAN8 && p != V_FAN64 && p != V_BURST)
				continue;
			tagged[n] = scenarios[i];
			tagged[n++].variant = name;
		}
		rc = bench_run_all(&o, tagged, n, run_rep);
	} else {
		rc = bench_run_all(&o, scenarios, sizeof(scenarios) / sizeof(scenarios[0]),
		                   run_rep);
	}
	run_idle(&o, tag && *tag ? name : "heirloom");
	hl_close(pub);
	hlb_teardown();
	return rc;
}
