/* SPDX-License-Identifier: MIT */
/*
 * heirloom_cleanup: time from a client's SIGKILL to its observers being
 * gone, for a client holding 1 and one holding 10,000 observers.
 *
 * For each kill a fresh victim process attaches, observes N times (over 100
 * keys that have values, so only the observers come and go) and says it is
 * ready; the bench reads the baseline observer count, stamps t0, SIGKILLs
 * the victim and polls hl_stats() in a tight loop until the observer count
 * is back to the baseline: t1. The sample is t1 - t0, which covers the
 * kernel tearing the process down, the worker's pidfd wake-up and its
 * cleanup of every observer (docs/architecture.md). Then it waits, bounded,
 * for the endpoint to be freed too, before the next victim.
 *
 * Series (scenario cleanup-obsN, variant heirloom, ns): 100 kills per
 * series (20 with --quick), spread over --reps repetitions.
 *
 * It owns its victims (plain fork() with PR_SET_PDEATHSIG, reaped here, not
 * harness children: it reaps them itself) and whatever heirloom_common.h
 * owns; every wait is bounded.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "heirloom_common.h"
#include "stats.h"

#define KEYS        100u
#define GRACE_NS    (60 * BENCH_NS_PER_S)
#define CLEANUP_MAX (30 * BENCH_NS_PER_S)

static const uint32_t counts[] = { 1, 10000 };
static struct hl_client *mon;

static void
key_of(char *buf, size_t len, uint32_t i)
{
	snprintf(buf, len, "hb/cl/%u", i % KEYS);
}

/* The victim: observe N times, say so on fd, wait for the SIGKILL. */
static int
victim_main(uint32_t n, int fd)
{
	struct hl_client *c;
	if (hlb_open(0, stats_now_ns() + 10 * BENCH_NS_PER_S, &c))
		return 10;
	for (uint32_t i = 0; i < n; i++) {
		char key[32];
		hl_observer_id id;
		key_of(key, sizeof(key), i);
		int rc = hl_observe(c, key, strlen(key), 0, &id);
		if (rc) {
			fprintf(stderr, "cleanup: observe %u of %u: %s\n", i, n, hl_strerror(rc));
			return 11;
		}
	}
	if (write(fd, "r", 1) != 1)
		return 12;
	for (;;)
		pause();
}

static int
stats_now(struct hl_stats *st)
{
	int rc = hl_stats(mon, st);
	return rc;
}

/* Wait until the table holds OBS observers and EPS endpoints. */
static int
wait_counts(uint64_t obs, uint64_t eps, uint64_t deadline)
{
	struct hl_stats st;
	for (;;) {
		int rc = stats_now(&st);
		if (rc)
			return rc;
		if (st.observers == obs && st.endpoints == eps)
			return 0;
		if (stats_now_ns() > deadline)
			return -ETIMEDOUT;
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
}

/* One kill of a victim holding N observers: its sample into OUT. */
static int
kill_once(uint32_t n, struct stats_samples *out)
{
	struct hl_stats st;
	int rc = stats_now(&st);
	if (rc)
		return rc;
	const uint64_t base_obs = st.observers, base_eps = st.endpoints;
	int p[2];
	if (pipe(p) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		rc = -errno;
		close(p[0]);
		close(p[1]);
		return rc;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		_exit(victim_main(n, p[1]));
	}
	close(p[1]);
	struct pollfd pf = { .fd = p[0], .events = POLLIN };
	char b;
	if (poll(&pf, 1, (int)(GRACE_NS / BENCH_NS_PER_MS)) != 1 || read(p[0], &b, 1) != 1) {
		rc = -ETIMEDOUT;
		goto out_kill;
	}
	rc = wait_counts(base_obs + n, base_eps + 1, stats_now_ns() + GRACE_NS);
	if (rc)
		goto out_kill;

	uint64_t t0 = stats_now_ns();
	kill(pid, SIGKILL);
	for (;;) {
		if ((rc = stats_now(&st)) != 0)
			goto out_reap;
		if (st.observers == base_obs)
			break;
		if (stats_now_ns() - t0 > CLEANUP_MAX) {
			rc = -ETIMEDOUT;
			goto out_reap;
		}
	}
	uint64_t t1 = stats_now_ns();
	rc = stats_add(out, t1 - t0);
out_reap:
	waitpid(pid, NULL, 0);
	close(p[0]);
	if (rc == 0)
		rc = wait_counts(base_obs, base_eps, stats_now_ns() + GRACE_NS);
	return rc;
out_kill:
	kill(pid, SIGKILL);
	goto out_reap;
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse_args(argc, argv, &o);
	int rc = hlb_setup();
	if (rc == 0)
		rc = hlb_open(HL_OPEN_SYNC, stats_now_ns() + 20 * BENCH_NS_PER_S, &mon);
	if (rc) {
		fprintf(stderr, "heirloom_cleanup: no worker serving '%s': %s\n", hlb_name(),
		        hl_strerror(rc));
		return 1;
	}
	/* The keys keep values, so a victim's death removes observers only. */
	for (uint32_t i = 0; i < KEYS && rc == 0; i++) {
		char key[32];
		key_of(key, sizeof(key), i);
		rc = hl_publish(mon, key, strlen(key), "v", 1, NULL, 0);
	}
	if (rc) {
		fprintf(stderr, "heirloom_cleanup: publish: %s\n", hl_strerror(rc));
		return 1;
	}
	const unsigned total = o.quick ? 20 : 100;
	const unsigned reps = o.reps ? o.reps : 1;
	const unsigned per_rep = (total + reps - 1) / reps;
	bench_install_guards(o.quick ? 600 : 3600);
	stats_print_header(stdout);
	int failed = 0;
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		static char names[2][32];
		snprintf(names[k], sizeof(names[k]), "cleanup-obs%u", counts[k]);
		if (!bench_wanted(&o, names[k], "heirloom"))
			continue;
		struct bench_series s;
		bench_series_init(&s, names[k], "heirloom", STATS_LATENCY, "ns");
		for (unsigned r = 0; r < reps; r++) {
			struct stats_samples one;
			stats_init(&one);
			int err = stats_reserve(&one, per_rep);
			for (unsigned i = 0; i < per_rep && err == 0; i++)
				err = kill_once(counts[k], &one);
			if (err) {
				fprintf(stderr, "%s: %s\n", names[k], hl_strerror(err));
				failed = 1;
			}
			bench_series_add_rep(&s, &one);
			stats_fini(&one);
			if (err)
				break;
		}
		bench_series_report(&s, &o);
		bench_series_fini(&s);
	}
	hl_close(mon);
	hlb_teardown();
	return failed;
}
