/* SPDX-License-Identifier: MIT */
/*
 * heirloom_reattach: SIGKILL the worker with N observers in the table
 * (N = 1,000, 100,000, 1,000,000) and time how long until a publish is
 * dispatched again.
 *
 * One holder process observes a probe key once and N - 1 observers over
 * min(N, 10,000) other keys, then waits in hl_next(). For each kill the
 * bench stamps t0, SIGKILLs the worker, queues a publish of the probe key
 * at once (the request ring survives the worker), and has a new worker
 * started: by the keeper when one supervises (production), else by the bench
 * (heirloom-worker --standalone, as scripts/bench started it).
 *
 * Series (scenario reattach-obsN, ns):
 *   heirloom (or heirloom-keeper)  t0 -> the holder received the probe event
 *   heirloom-attached              the new worker owns the table (hl_stats
 *                                  owner, polled every 50 us) -> the holder
 *                                  received the event: recovery, start of
 *                                  the threads and the first dispatch,
 *                                  without the restart delay before it
 *   heirloom-recovery              the new worker's recovery pass alone
 *                                  (hl_stats.last_recovery_ns)
 * With a keeper, every kill comes after a stable run, as a crash in
 * production does: the bench waits until the worker has served for
 * STABLE_NS (the keeper's --restart-stable, 1 s by default, plus margin)
 * before it kills it, so the keeper restarts it at once. A quicker kill
 * would measure the crash-loop back-off (--restart-min) instead.
 *
 * It owns the holder process (harness.h) and a worker it restarted
 * (heirloom_common.h); every wait is bounded.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "heirloom_common.h"
#include "stats.h"

#define PROBE    "hb/reattach/probe"
#define MAX_KEYS 10000u
#define GRACE_NS (60 * BENCH_NS_PER_S)
/* Longer than the keeper's default --restart-stable (1 s) counted from the
 * worker's start, which is before it owns the table. */
#define STABLE_NS (1200 * BENCH_NS_PER_S / 1000)

static const uint32_t counts[] = { 1000, 100000, 1000000 };
static struct hl_client *pub;

static int
holder_main(uint32_t n, struct bench_board *b, uint64_t hard_ns)
{
	struct hl_client *c;
	char key[32];
	hl_observer_id id;
	if (hlb_open(0, stats_now_ns() + 10 * BENCH_NS_PER_S, &c))
		return 10;
	if (hl_observe(c, PROBE, strlen(PROBE), 0, &id))
		return 11;
	uint32_t nkeys = n < MAX_KEYS ? n : MAX_KEYS;
	for (uint32_t i = 1; i < n; i++) {
		snprintf(key, sizeof(key), "hb/ra/%u", i % nkeys);
		int rc = hl_observe(c, key, strlen(key), 0, &id);
		if (rc) {
			fprintf(stderr, "reattach: observe %u of %u: %s\n", i, n, hl_strerror(rc));
			return 12;
		}
	}
	bench_board_ready(b);
	while (!atomic_load_explicit(&b->stop, memory_order_relaxed) && stats_now_ns() < hard_ns) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 50);
		if (rc == -ETIMEDOUT)
			continue;
		if (rc < 0)
			return 13;
		uint64_t now = stats_now_ns();
		if (ev.type == HL_EV_PUT && ev.key_len == strlen(PROBE) &&
		    memcmp(ev.key, PROBE, ev.key_len) == 0)
			bench_board_ack(b, 0, now);
	}
	hl_close(c);
	return 0;
}

/* A killed process is gone, or a zombie its parent has not reaped yet. */
static int
wait_dead(pid_t pid, uint64_t deadline)
{
	char buf[256];
	while (stats_now_ns() < deadline) {
		const char *p = bench_proc_stat(pid, buf, sizeof(buf));
		if (!p || *p == 'Z' || *p == 'X')
			return 0;
		sched_yield();
	}
	return -ETIMEDOUT;
}

/* Wait until the table is back to at most LIMIT observers (cleanup of an
 * earlier holder is asynchronous). */
static int
wait_observers(uint64_t limit, uint64_t deadline)
{
	struct hl_stats st;
	while (hl_stats(pub, &st) == 0 && st.observers > limit) {
		if (stats_now_ns() > deadline)
			return -ETIMEDOUT;
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* Wait for the holder's ack of the probe event, noting when a new worker
 * (not OLD) took the table: *owned_ns. Polls every 50 us (hl_stats() reads
 * the header; no worker involved). */
static int
wait_probe(struct bench_board *b, pid_t old, uint64_t deadline, uint64_t *owned_ns,
           uint64_t *recv_ns)
{
	*owned_ns = 0;
	while (atomic_load_explicit(&b->done, memory_order_acquire) < 1) {
		uint64_t now = stats_now_ns();
		struct hl_stats st;
		if (!*owned_ns && hl_stats(pub, &st) == 0 && st.owner_role == 2 &&
		    st.owner_pid != old)
			*owned_ns = now;
		if (now > deadline)
			return -ETIMEDOUT;
		struct timespec ts = { 0, 50000 };
		nanosleep(&ts, NULL);
	}
	*recv_ns = atomic_load_explicit(&b->slot[0].recv_ns, memory_order_relaxed);
	if (!*owned_ns)
		*owned_ns = *recv_ns; /* taken and served within one poll */
	return 0;
}

/* When the serving worker was first seen owning the table. */
static uint64_t served_since_ns;

/* Under a keeper, wait until the worker's run counts as stable. */
static void
wait_stable(void)
{
	if (!hlb_have_keeper())
		return;
	uint64_t until = served_since_ns + STABLE_NS, now;
	while ((now = stats_now_ns()) < until) {
		uint64_t left = until - now;
		struct timespec ts = { (time_t)(left / BENCH_NS_PER_S),
			               (long)(left % BENCH_NS_PER_S) };
		nanosleep(&ts, NULL);
	}
}

static int
kill_once(struct bench_board *b, uint64_t seq, struct stats_samples *lat, struct stats_samples *att,
          struct stats_samples *rec)
{
	struct hl_stats st0, st;
	wait_stable();
	hl_stats(pub, &st0);
	bench_board_arm(b);
	uint64_t t0 = stats_now_ns();
	int pid = hlb_worker_kill(pub);
	if (pid < 0)
		return pid;
	/* Queued while no worker runs: applied by the next one. */
	int err = hl_publish(pub, PROBE, strlen(PROBE), &seq, 8, NULL, 0);
	if (err)
		return err;
	err = wait_dead(pid, t0 + 5 * BENCH_NS_PER_S);
	if (err == 0)
		err = hlb_worker_restart();
	uint64_t recv, owned;
	if (err == 0)
		err = wait_probe(b, pid, t0 + GRACE_NS, &owned, &recv);
	if (err)
		return err;
	served_since_ns = owned;
	stats_add(lat, recv - t0);
	stats_add(att, recv > owned ? recv - owned : 0);
	/* The recovery time is stored before the worker serves. */
	if (hl_stats(pub, &st) == 0 && st.reattaches > st0.reattaches)
		stats_add(rec, st.last_recovery_ns);
	return 0;
}

static int
run_n(uint32_t n, const struct bench_opts *o, struct stats_samples *lat, struct stats_samples *att,
      struct stats_samples *rec)
{
	static uint64_t seq = 1;
	unsigned kills = o->quick ? 3 : 7;
	int err = wait_observers(0, stats_now_ns() + GRACE_NS);
	if (err)
		return err;
	struct bench_board *b = bench_board_create(1);
	if (!b)
		return -errno;
	uint64_t hard = stats_now_ns() + GRACE_NS * (kills + 2);
	pid_t pid = bench_fork();
	if (pid == 0)
		_exit(holder_main(n, b, hard));
	if (pid < 0) {
		err = -errno;
		goto out;
	}
	err = bench_board_wait_ready(b, stats_now_ns() + GRACE_NS);
	for (unsigned k = 0; k < kills && err == 0; k++)
		err = kill_once(b, seq++, lat, att, rec);
	atomic_store_explicit(&b->stop, 1, memory_order_relaxed);
	if (bench_reap_all(stats_now_ns() + 10 * BENCH_NS_PER_S) > 0 && err == 0)
		err = -ECHILD;
out:
	bench_kill_all();
	bench_board_destroy(b);
	return err;
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
		fprintf(stderr, "heirloom_reattach: no worker serving '%s': %s\n", hlb_name(),
		        hl_strerror(rc));
		return 1;
	}
	served_since_ns = stats_now_ns(); /* it serves: hlb_open() succeeded */
	bench_install_guards(600);
	stats_print_header(stdout);
	const char *variant = hlb_have_keeper() ? "heirloom-keeper" : "heirloom";
	int failed = 0;
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		static char names[3][32];
		snprintf(names[k], sizeof(names[k]), "reattach-obs%u", counts[k]);
		if (!bench_wanted(&o, names[k], variant))
			continue;
		struct bench_series ser[3];
		struct stats_samples smp[3];
		bench_series_init(&ser[0], names[k], variant, STATS_LATENCY, "ns");
		bench_series_init(&ser[1], names[k], "heirloom-attached", STATS_LATENCY, "ns");
		bench_series_init(&ser[2], names[k], "heirloom-recovery", STATS_LATENCY, "ns");
		for (int j = 0; j < 3; j++)
			stats_init(&smp[j]);
		/* One series of kills: each kill is a sample (and its own
		 * repetition of the whole reattach). */
		int err = run_n(counts[k], &o, &smp[0], &smp[1], &smp[2]);
		if (err) {
			fprintf(stderr, "%s: %s\n", names[k], hl_strerror(err));
			failed = 1;
		}
		for (int j = 0; j < 3; j++) {
			for (size_t i = 0; i < smp[j].n; i++) {
				struct stats_samples one = { .v = &smp[j].v[i], .n = 1, .cap = 1 };
				bench_series_add_rep(&ser[j], &one);
			}
			bench_series_report(&ser[j], &o);
			stats_fini(&smp[j]);
			bench_series_fini(&ser[j]);
		}
	}
	hl_close(pub);
	hlb_teardown();
	return failed;
}
