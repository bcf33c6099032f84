/* SPDX-License-Identifier: MIT */
/*
 * demo.c: heirloom-demo, the counter demo (run by scripts/demo against a
 * keeper started with --spawn-worker). A client increments a counter key
 * (hl_get, +1, hl_publish_if on the revision read) a few times, SIGKILLs the
 * worker that owns the table, watches the owner record go to the keeper
 * and back to a restarted worker, and repeats; an observer of the same key
 * must see every value. It prints each step and exits non-zero if any value
 * is missing, duplicated or out of order.
 *
 * Increments are compare-and-set, so several demos (or any other CAS
 * incrementers) may count on the same key at once and no increment is lost:
 * each value is written once, by the one CAS that found its predecessor.
 * --no-kill leaves the worker alone (for running two demos side by side).
 *
 * It uses the public API only (plus kill(2)), like any client; it owns no
 * process but itself and only signals the worker named in the owner record.
 */
#include "heirloom/heirloom.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STEPS 1000

static const char *name = "demo";
static const char *key = "demo/counter";
static int cycles = 3, per_cycle = 3, timeout_ms = 20000, no_kill;

static void
usage(FILE *f)
{
	fprintf(f,
	        "Usage: heirloom-demo [OPTIONS]\n"
	        "Count 1..N across worker crashes: increment a counter key, SIGKILL the worker,\n"
	        "wait for the keeper's supervisor to restart it, repeat. Needs a keeper\n"
	        "started with --spawn-worker on the segment.\n"
	        "\n"
	        "  --name NAME        segment name                          [demo]\n"
	        "  --key KEY          counter key                           [demo/counter]\n"
	        "  --cycles N         kill/restart cycles                   [3]\n"
	        "  --per-cycle N      increments before each kill           [3]\n"
	        "  --timeout-ms MS    longest wait for a worker, per step   [20000]\n"
	        "  --no-kill          only count (cycles x per-cycle increments), kill nothing\n"
	        "\n"
	        "Each increment is a compare-and-set (hl_publish_if on the revision read,\n"
	        "retried on HL_ECONFLICT), so demos running at once on one key lose nothing:\n"
	        "the counter ends at the sum of their increments.\n"
	        "  -h, --help         this text\n"
	        "\n"
	        "Exit status: 0 every value arrived, 1 a value is missing or a step failed,\n"
	        "2 bad usage.\n");
}

static int
parse(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, 0, 'n' },
		{ "key", required_argument, 0, 'k' },
		{ "cycles", required_argument, 0, 'c' },
		{ "per-cycle", required_argument, 0, 'p' },
		{ "timeout-ms", required_argument, 0, 't' },
		{ "no-kill", no_argument, 0, 'K' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		long v = optarg ? strtol(optarg, &end, 10) : 0;
		int numeric = c == 'c' || c == 'p' || c == 't';
		if (numeric && (end == optarg || *end || v < 1 || v > 100000)) {
			fprintf(stderr, "heirloom-demo: '%s' is not a count in 1..100000\n",
			        optarg);
			return 2;
		}
		switch (c) {
		case 'n': name = optarg; break;
		case 'k': key = optarg; break;
		case 'c': cycles = (int)v; break;
		case 'p': per_cycle = (int)v; break;
		case 't': timeout_ms = (int)v; break;
		case 'K': no_kill = 1; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || (long)cycles * per_cycle > MAX_STEPS) {
		fprintf(stderr,
		        "heirloom-demo: bad arguments (at most %d increments; see --help)\n",
		        MAX_STEPS);
		return 2;
	}
	return 0;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
nap_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static const char *
role_name(int role)
{
	return role == 1 ? "keeper" : role == 2 ? "worker" : "none";
}

static void
print_owner(const struct hl_stats *st, const char *note)
{
	printf("  owner: %-6s pid %-7d epoch %-4lu%s%s\n", role_name(st->owner_role),
	       (int)st->owner_pid, (unsigned long)st->epoch, note ? "  " : "", note ? note : "");
	fflush(stdout);
}

/* Wait until a worker other than NOT_PID owns the table. Prints the keeper
 * in between if it sees it. 0, or -ETIMEDOUT. */
static int
wait_worker(struct hl_client *c, pid_t not_pid, struct hl_stats *out)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	int saw_keeper = 0;
	struct hl_stats st;
	while (now_ms() < end) {
		if (hl_stats(c, &st) == 0) {
			if (st.owner_role == 1 && !saw_keeper && not_pid) {
				print_owner(&st, "<- the keeper took the table back");
				saw_keeper = 1;
			}
			if (st.owner_role == 2 && st.owner_pid != not_pid) {
				if (not_pid && !saw_keeper)
					printf("  (the keeper's turn as owner was too short to "
					       "see)\n");
				print_owner(&st, not_pid ? "<- a restarted worker took it"
				                         : "<- the worker serves");
				*out = st;
				return 0;
			}
		}
		nap_ms(1);
	}
	return -ETIMEDOUT;
}

static int
read_counter(struct hl_client *c, long *v, uint64_t *rev)
{
	char buf[32];
	size_t len = 0;
	int rc = hl_get(c, key, strlen(key), buf, sizeof(buf) - 1, &len, rev);
	if (rc == -ENOENT) {
		/* No value: 0, and revision 0 for hl_publish_if() ("only if
		 * absent"), whatever hl_get reports for a deleted key. */
		*v = 0;
		if (rev)
			*rev = 0;
		return 0;
	}
	if (rc)
		return rc;
	if (len >= sizeof(buf))
		return -EOVERFLOW;
	buf[len] = '\0';
	*v = strtol(buf, NULL, 10);
	return 0;
}

/* One increment: read the counter and its revision, write value + 1 "if
 * the revision is still the one read", retry on a conflict (another
 * incrementer got there first). *v gets the value this call wrote, *rev
 * its revision (after an in-doubt success: the key's revision when read,
 * perhaps a later one). */
/* Conflicts in a row before an increment gives up: another incrementer
 * wins each one, so a long run means nobody makes progress (a bug), not
 * contention (a few demos lose a handful in a row). */
#define MAX_CONFLICTS 100000

static int
increment(struct hl_client *c, long *v, uint64_t *rev)
{
	for (int conflicts = 0; conflicts < MAX_CONFLICTS; conflicts++) {
		long cur = 0;
		uint64_t r = 0;
		int rc = read_counter(c, &cur, &r);
		if (rc == -EBUSY)
			continue; /* the counter kept changing as hl_get read it: read again */
		if (rc)
			return rc;
		char val[32];
		int n = snprintf(val, sizeof(val), "%ld", cur + 1);
		rc = hl_publish_if(c, key, strlen(key), val, (size_t)n, "demo", 4, r, rev);
		if (rc == 0) {
			*v = cur + 1;
			return 0;
		}
		if (rc == -ETIMEDOUT) {
			/* In doubt (the worker was killed with it): it is
			 * decided exactly once later, and hl_flush() waits for
			 * that. 0: it was applied, this is our increment;
			 * HL_ECONFLICT: it never will be, read and try again. */
			rc = hl_flush(c, timeout_ms);
			if (rc == 0) {
				*v = cur + 1;
				if (read_counter(c, &cur, rev))
					*rev = 0; /* for the printout only */
				return 0;
			}
		}
		if (rc != HL_ECONFLICT)
			return rc;
	}
	return HL_ECONFLICT;
}

/* Take the observer's events; every value first..total must come once, in
 * order: each value is written once, by the increment that found its
 * predecessor (ours or another demo's). */
static int
check_events(struct hl_client *c, hl_observer_id id, long first, long total)
{
	long expect = first;
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	printf("observer saw:");
	while (expect <= total && now_ms() < end) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 500);
		if (rc == -ETIMEDOUT || rc == -EAGAIN)
			continue;
		if (rc) {
			printf("\nhl_next: %s\n", hl_strerror(rc));
			return -1;
		}
		if (ev.observer != id)
			continue;
		if (ev.type != HL_EV_PUT) {
			printf("\nunexpected event type %d (a lag would mean lost events here)\n",
			       ev.type);
			return -1;
		}
		char buf[32];
		size_t n = ev.new_len < sizeof(buf) - 1 ? ev.new_len : sizeof(buf) - 1;
		memcpy(buf, ev.new_value, n);
		buf[n] = '\0';
		long v = strtol(buf, NULL, 10);
		/* Another incrementer's values from between our observe and
		 * our first read: before the range this run checks. */
		if (v < first)
			continue;
		printf(" %ld", v);
		if (v != expect) {
			printf("\nexpected %ld, got %ld\n", expect, v);
			return -1;
		}
		expect++;
	}
	printf("\n");
	if (expect <= total) {
		printf("observer: values %ld..%ld never arrived\n", expect, total);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct hl_client *c = NULL;
	struct hl_open_opts oo = { .flags = HL_OPEN_SYNC, .timeout_ms = timeout_ms };
	struct hl_stats st;
	hl_observer_id obs = 0;
	long first = 0, v = 0, mine = 0;
	int rc = parse(argc, argv);
	if (rc)
		return rc;
	oo.timeout_ms = timeout_ms;

	/* The keeper may still be creating the segment. */
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	while ((rc = hl_open(name, &oo, &c)) == -ENOENT && now_ms() < end)
		nap_ms(20);
	if (rc) {
		fprintf(stderr, "heirloom-demo: cannot open segment '%s': %s\n", name,
		        hl_strerror(rc));
		return 1;
	}
	printf("heirloom demo: segment '%s', key '%s', %d cycles of %d increments\n", name, key,
	       cycles, per_cycle);
	if (hl_stats(c, &st) == 0 && st.owner_role != 2)
		print_owner(&st, "at start");
	if (wait_worker(c, 0, &st)) {
		fprintf(stderr, "heirloom-demo: no worker took the table within %d ms\n",
		        timeout_ms);
		goto fail;
	}
	rc = hl_observe(c, key, strlen(key), 0, &obs);
	if (rc == 0)
		rc = read_counter(c, &first, NULL);
	if (rc) {
		fprintf(stderr, "heirloom-demo: observe/get: %s\n", hl_strerror(rc));
		goto fail;
	}
	first++;
	long last = first - 1 + (long)cycles * per_cycle;

	for (int cy = 1; cy <= cycles; cy++) {
		printf("cycle %d\n", cy);
		for (int i = 0; i < per_cycle; i++) {
			uint64_t rev = 0;
			rc = increment(c, &v, &rev);
			if (rc) {
				fprintf(stderr, "heirloom-demo: increment: %s\n", hl_strerror(rc));
				goto fail;
			}
			printf("  counter = %ld  (revision %lu)\n", v, (unsigned long)rev);
			mine++;
		}
		if (no_kill)
			continue;
		if (hl_stats(c, &st) || st.owner_role != 2) {
			fprintf(stderr, "heirloom-demo: no worker owns the table to kill\n");
			goto fail;
		}
		pid_t victim = st.owner_pid;
		printf("  kill -KILL worker pid %d\n", (int)victim);
		fflush(stdout);
		if (kill(victim, SIGKILL) < 0) {
			fprintf(stderr, "heirloom-demo: kill %d: %s\n", (int)victim,
			        strerror(errno));
			goto fail;
		}
		if (wait_worker(c, victim, &st)) {
			fprintf(stderr,
			        "heirloom-demo: no worker came back within %d ms (is the keeper "
			        "running with --spawn-worker?)\n",
			        timeout_ms);
			goto fail;
		}
	}
	/* Alone, the counter ends at `last`; with other incrementers, past
	 * it by theirs. Either way every value up to it came once. */
	rc = read_counter(c, &v, NULL);
	if (rc || v < last || mine != (long)cycles * per_cycle) {
		fprintf(stderr, "heirloom-demo: final counter %ld, expected at least %ld\n", v,
		        last);
		goto fail;
	}
	if (check_events(c, obs, first, v))
		goto fail;
	printf("OK: the counter went %ld..%ld with no value lost across %d worker kills\n", first,
	       v, no_kill ? 0 : cycles);
	hl_close(c);
	return 0;
fail:
	hl_close(c);
	return 1;
}
