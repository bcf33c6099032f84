/* SPDX-License-Identifier: MIT */
/*
 * heirloom_upgrade: the dispatch pause of heirloomctl upgrade (issue 17)
 * with N observers in the table (N = 1,000, 100,000, 1,000,000) under a
 * steady publisher.
 *
 * A holder process observes a probe key once and N - 1 observers over
 * min(N, 10,000) other keys, then takes events; a publisher process
 * publishes the probe key every PERIOD_US (asynchronously, as a steady
 * producer does). For each upgrade the bench arms the holder, runs
 * heirloomctl upgrade (the same worker binary: what is measured is the
 * hand-over, not a new build), and waits for it to succeed. The holder
 * records the longest gap between two consecutive probe events while armed:
 * the last event dispatched by the old worker -> the first by the new,
 * seen from a client (its receive path is in both ends, so it cancels).
 *
 * Series (scenario upgrade-pause-obsN, variant heirloom-keeper, ns): that
 * gap, one sample per upgrade. Needs the keeper (scripts/bench starts
 * heirloom-keeper --spawn-worker, and exports HEIRLOOM_BENCH_SOCKET and
 * HEIRLOOM_BENCH_CTL); without one it says so and measures nothing.
 *
 * It owns its holder and publisher processes (harness.h); every wait is
 * bounded.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "heirloom_common.h"
#include "stats.h"

#define PROBE     "hb/upgrade/probe"
#define MAX_KEYS  10000u
#define PERIOD_US 200
#define GRACE_NS  (60 * BENCH_NS_PER_S)

static const uint32_t counts[] = { 1000, 100000, 1000000 };

struct board {
	_Atomic int ready, stop, armed;
	_Atomic uint64_t last_ns; /* holder: last probe event received */
	_Atomic uint64_t max_gap_ns;
	_Atomic uint64_t events;
};

static int
holder_main(uint32_t n, struct board *b, uint64_t hard_ns)
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
		snprintf(key, sizeof(key), "hb/up/%u", i % nkeys);
		int rc = hl_observe(c, key, strlen(key), 0, &id);
		if (rc) {
			fprintf(stderr, "upgrade: observe %u of %u: %s\n", i, n, hl_strerror(rc));
			return 12;
		}
	}
	atomic_store(&b->ready, 1);
	while (!atomic_load_explicit(&b->stop, memory_order_relaxed) && stats_now_ns() < hard_ns) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 50);
		if (rc == -ETIMEDOUT)
			continue;
		if (rc < 0)
			return 13;
		uint64_t now = stats_now_ns();
		if (ev.type != HL_EV_PUT || ev.key_len != strlen(PROBE) ||
		    memcmp(ev.key, PROBE, ev.key_len) != 0)
			continue;
		uint64_t last = atomic_exchange(&b->last_ns, now);
		if (atomic_load_explicit(&b->armed, memory_order_relaxed) && last &&
		    now - last > atomic_load(&b->max_gap_ns))
			atomic_store(&b->max_gap_ns, now - last);
		atomic_fetch_add_explicit(&b->events, 1, memory_order_relaxed);
	}
	hl_close(c);
	return 0;
}

static int
publisher_main(struct board *b, uint64_t hard_ns)
{
	struct hl_client *c;
	if (hlb_open(0, stats_now_ns() + 10 * BENCH_NS_PER_S, &c))
		return 20;
	for (uint64_t seq = 1;
	     !atomic_load_explicit(&b->stop, memory_order_relaxed) && stats_now_ns() < hard_ns;
	     seq++) {
		int rc = hl_publish(c, PROBE, strlen(PROBE), &seq, sizeof(seq), NULL, 0);
		if (rc && rc != -EAGAIN)
			return 21;
		usleep(PERIOD_US);
	}
	hl_close(c);
	return 0;
}

/* heirloomctl upgrade through the bench's keeper; its exit status. */
static int
run_upgrade(void)
{
	const char *ctl = getenv("HEIRLOOM_BENCH_CTL");
	const char *sock = getenv("HEIRLOOM_BENCH_SOCKET");
	pid_t p = fork();
	if (p < 0)
		return -errno;
	if (p == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, 1);
		execl(ctl, ctl, "--name", hlb_name(), "upgrade", "--socket", sock, "--timeout",
		      "60000", (char *)NULL);
		_exit(127);
	}
	int st = 0;
	if (waitpid(p, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static struct hl_client *pub;

/* Wait until the table is back to at most LIMIT observers (the cleanup of
 * an earlier holder is asynchronous). */
static int
wait_observers(uint64_t limit, uint64_t deadline)
{
	struct hl_stats st;
	while (hl_stats(pub, &st) == 0 && st.observers > limit) {
		if (stats_now_ns() > deadline)
			return -ETIMEDOUT;
		sleep_ms(10);
	}
	return 0;
}

static int
run_n(uint32_t n, const struct bench_opts *o, struct stats_samples *pause)
{
	unsigned upgrades = o->quick ? 2 : 20;
	int werr = wait_observers(0, stats_now_ns() + GRACE_NS);
	if (werr)
		return werr;
	struct board *b =
	        mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		return -errno;
	memset(b, 0, sizeof(*b));
	uint64_t hard = stats_now_ns() + GRACE_NS * (upgrades + 2);
	int err = 0;
	pid_t h = bench_fork();
	if (h == 0)
		_exit(holder_main(n, b, hard));
	for (uint64_t until = stats_now_ns() + GRACE_NS; !atomic_load(&b->ready) && !err;
	     sleep_ms(10))
		if (stats_now_ns() > until || bench_check_children())
			err = -ETIMEDOUT;
	pid_t p = err ? -1 : bench_fork();
	if (p == 0)
		_exit(publisher_main(b, hard));
	for (unsigned u = 0; u < upgrades && err == 0; u++) {
		/* Steady state first: the publisher's events flow. */
		sleep_ms(200);
		atomic_store(&b->max_gap_ns, 0);
		atomic_store(&b->armed, 1);
		int rc = run_upgrade();
		if (rc) {
			fprintf(stderr, "upgrade-pause-obs%u: heirloomctl upgrade exited %d\n", n,
			        rc);
			err = -EPROTO;
			break;
		}
		/* The first events of the new worker. */
		sleep_ms(100);
		atomic_store(&b->armed, 0);
		stats_add(pause, atomic_load(&b->max_gap_ns));
	}
	atomic_store(&b->stop, 1);
	if (bench_reap_all(stats_now_ns() + 10 * BENCH_NS_PER_S) > 0 && err == 0)
		err = -ECHILD;
	bench_kill_all();
	munmap(b, sizeof(*b));
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
		fprintf(stderr, "heirloom_upgrade: no worker serving '%s': %s\n", hlb_name(),
		        hl_strerror(rc));
		return 1;
	}
	if (!hlb_have_keeper() || !getenv("HEIRLOOM_BENCH_CTL") ||
	    !getenv("HEIRLOOM_BENCH_SOCKET")) {
		fprintf(stderr, "heirloom_upgrade: needs the keeper that scripts/bench starts "
		                "(HEIRLOOM_BENCH_CTL, HEIRLOOM_BENCH_SOCKET): skipped\n");
		hl_close(pub);
		hlb_teardown();
		return 0;
	}
	bench_install_guards(900);
	stats_print_header(stdout);
	int failed = 0;
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		static char names[3][32];
		snprintf(names[k], sizeof(names[k]), "upgrade-pause-obs%u", counts[k]);
		if (!bench_wanted(&o, names[k], "heirloom-keeper"))
			continue;
		struct bench_series ser;
		struct stats_samples smp;
		bench_series_init(&ser, names[k], "heirloom-keeper", STATS_LATENCY, "ns");
		stats_init(&smp);
		int err = run_n(counts[k], &o, &smp);
		if (err) {
			fprintf(stderr, "%s: %s\n", names[k], hl_strerror(err));
			failed = 1;
		}
		for (size_t i = 0; i < smp.n; i++) {
			struct stats_samples one = { .v = &smp.v[i], .n = 1, .cap = 1 };
			bench_series_add_rep(&ser, &one);
		}
		bench_series_report(&ser, &o);
		stats_fini(&smp);
		bench_series_fini(&ser);
	}
	hl_close(pub);
	hlb_teardown();
	return failed;
}
