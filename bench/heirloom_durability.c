/* SPDX-License-Identifier: MIT */
/*
 * heirloom_durability: what the keeper's --durability costs (issue 17).
 * It starts its own keepers (one per mode, --spawn-worker, the daemons
 * next to this binary) with a state directory under
 * $HEIRLOOM_BENCH_STATE_DIR (default /var/tmp): that is the disk measured.
 * The segment scripts/bench prepares is not used.
 *
 * Series (scenario/variant, unit):
 *   publish-sync/<mode>    ns     one HL_OPEN_SYNC publish, answered (and in
 *                                 log mode: on disk), one at a time
 *   publish-async/<mode>   msg/s  asynchronous publishes of 64 keys until
 *                                 hl_flush() returns, per batch
 *   restore-<N>/log        ns     keeper start with N keys on disk (segment
 *                                 created, restored by the worker) -> the
 *                                 first SYNC publish answered
 *   fsync/disk             ns     write 4 KiB + fdatasync in the state
 *                                 directory: what the disk does
 * <mode> is none, snapshot or log. N is 65,536 and 1,000,000 (65,536 only
 * with --quick).
 *
 * It owns its keepers (their workers die with them: the bench stops each
 * keeper with SIGTERM, which stops its worker); every wait is bounded.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#include "heirloom/heirloom.h"

static char bindir[PATH_MAX], base[PATH_MAX];
static const char *const modes[] = { "none", "snapshot", "log" };

struct keeper {
	pid_t pid;
	char name[64], sock[PATH_MAX + 16], state[PATH_MAX + 16];
};

/* Start a keeper in MODE with capacity for KEYS keys on segment NAME. */
static int
keeper_start(struct keeper *k, const char *name, const char *mode, uint32_t keys)
{
	snprintf(k->name, sizeof(k->name), "%s", name);
	snprintf(k->sock, sizeof(k->sock), "%s/%s.sock", base, name);
	snprintf(k->state, sizeof(k->state), "%s/%s", base, name);
	char keeper[PATH_MAX + 32], spawn[PATH_MAX + 32], maxkeys[32], heap[32];
	snprintf(keeper, sizeof(keeper), "%s/heirloom-keeper", bindir);
	snprintf(spawn, sizeof(spawn), "--spawn-worker=%s/heirloom-worker", bindir);
	snprintf(maxkeys, sizeof(maxkeys), "%u", keys + keys / 8 + 1024);
	snprintf(heap, sizeof(heap), "%llu", (unsigned long long)(keys + 4096) * 256ull);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0 && !getenv("HEIRLOOM_BENCH_VERBOSE"))
			dup2(devnull, 2);
		execl(keeper, keeper, "--foreground", "--name", name, "--socket", k->sock, spawn,
		      "--durability", mode, "--state-dir", k->state, "--snapshot-interval", "0",
		      "--max-keys", maxkeys, "--heap", heap, "--hang-timeout", "0", (char *)NULL);
		_exit(127);
	}
	k->pid = pid;
	return 0;
}

/* SIGTERM and wait (its worker hands back and stops first). */
static void
keeper_stop(struct keeper *k)
{
	if (k->pid <= 0)
		return;
	kill(k->pid, SIGTERM);
	for (int i = 0; i < 6000 && waitpid(k->pid, NULL, WNOHANG) == 0; i++)
		usleep(10000);
	kill(k->pid, SIGKILL);
	waitpid(k->pid, NULL, 0);
	k->pid = 0;
}

/* Open a SYNC client once the worker serves: the first SYNC publish
 * answered. 0 or an error. */
static int
open_served(const char *name, uint64_t deadline, struct hl_client **out)
{
	struct hl_open_opts oo = { .flags = HL_OPEN_SYNC, .timeout_ms = 1000 };
	while (stats_now_ns() < deadline) {
		struct hl_client *c;
		if (hl_open(name, &oo, &c) == 0) {
			if (hl_publish(c, "hb/ready", 8, "1", 1, NULL, 0) == 0) {
				*out = c;
				return 0;
			}
			hl_close(c);
		}
		usleep(1000);
	}
	return -ETIMEDOUT;
}

/* The segment a stopped keeper leaves (it outlives the daemons). */
static void
seg_unlink(const char *name)
{
	char path[96];
	snprintf(path, sizeof(path), "/heirloom.%s", name);
	shm_unlink(path);
}

static void
rmrf(const char *path)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "heirloom_durability: cannot remove %s\n", path);
}

static void
report_one(const struct bench_opts *o, const char *scenario, const char *variant,
           enum stats_kind kind, const char *unit, struct stats_samples *smp)
{
	struct bench_series ser;
	bench_series_init(&ser, scenario, variant, kind, unit);
	bench_series_add_rep(&ser, smp);
	bench_series_report(&ser, o);
	bench_series_fini(&ser);
}

static int
run_mode(const struct bench_opts *o, const char *mode)
{
	int want_sync = bench_wanted(o, "publish-sync", mode);
	int want_async = bench_wanted(o, "publish-async", mode);
	if (!want_sync && !want_async)
		return 0;
	char name[64];
	snprintf(name, sizeof(name), "bench-dur-%d-%s", (int)getpid(), mode);
	struct keeper k = { 0 };
	struct hl_client *c = NULL;
	int rc = keeper_start(&k, name, mode, 65536);
	if (rc == 0)
		rc = open_served(name, stats_now_ns() + 30 * BENCH_NS_PER_S, &c);
	if (rc) {
		fprintf(stderr, "%s: the keeper did not serve: %s\n", mode, hl_strerror(rc));
		keeper_stop(&k);
		return rc;
	}
	uint32_t n = o->quick ? 200 : 5000;
	char key[32], val[32];
	if (want_sync) {
		struct stats_samples smp;
		stats_init(&smp);
		stats_reserve(&smp, n);
		for (uint32_t i = 0; i < n && rc == 0; i++) {
			snprintf(key, sizeof(key), "hb/dur/%u", i % 64);
			snprintf(val, sizeof(val), "%u", i);
			uint64_t t0 = stats_now_ns();
			rc = hl_publish(c, key, strlen(key), val, strlen(val), NULL, 0);
			stats_add(&smp, stats_now_ns() - t0);
		}
		report_one(o, "publish-sync", mode, STATS_LATENCY, "ns", &smp);
		stats_fini(&smp);
	}
	if (want_async && rc == 0) {
		struct hl_client *a;
		struct hl_open_opts oo = { .timeout_ms = 10000 };
		rc = hl_open(name, &oo, &a);
		struct stats_samples smp;
		stats_init(&smp);
		uint32_t batch = o->quick ? 10000 : 100000;
		for (int r = 0; r < (o->quick ? 2 : 10) && rc == 0; r++) {
			uint64_t t0 = stats_now_ns();
			for (uint32_t i = 0; i < batch && rc == 0; i++) {
				snprintf(key, sizeof(key), "hb/dur/%u", i % 64);
				snprintf(val, sizeof(val), "%u.%u", r, i);
				rc = hl_publish(a, key, strlen(key), val, strlen(val), NULL, 0);
			}
			if (rc == 0)
				rc = hl_flush(a, 10000);
			uint64_t dt = stats_now_ns() - t0;
			stats_add(&smp, dt ? batch * BENCH_NS_PER_S / dt : 0);
		}
		if (rc == 0)
			hl_close(a);
		report_one(o, "publish-async", mode, STATS_RATE, "msg/s", &smp);
		stats_fini(&smp);
	}
	hl_close(c);
	keeper_stop(&k);
	seg_unlink(name);
	rmrf(k.state);
	return rc;
}

/* Fill N keys, stop cleanly (a final snapshot), remove the segment, and
 * time a fresh start that restores them. */
static int
run_restore(const struct bench_opts *o, uint32_t n)
{
	char scenario[32], name[64];
	snprintf(scenario, sizeof(scenario), "restore-%u", n);
	if (!bench_wanted(o, scenario, "log"))
		return 0;
	snprintf(name, sizeof(name), "bench-dur-%d-r%u", (int)getpid(), n);
	struct keeper k = { 0 };
	struct hl_client *c = NULL, *a = NULL;
	int rc = keeper_start(&k, name, "log", n);
	if (rc == 0)
		rc = open_served(name, stats_now_ns() + 60 * BENCH_NS_PER_S, &c);
	struct hl_open_opts oo = { .timeout_ms = 30000 };
	if (rc == 0)
		rc = hl_open(name, &oo, &a);
	char key[32], val[32];
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		snprintf(key, sizeof(key), "hb/restore/%u", i);
		snprintf(val, sizeof(val), "value-%u", i);
		rc = hl_publish(a, key, strlen(key), val, strlen(val), NULL, 0);
	}
	if (rc == 0)
		rc = hl_flush(a, 60000);
	if (a)
		hl_close(a);
	if (c)
		hl_close(c);
	keeper_stop(&k);
	seg_unlink(name);
	struct stats_samples smp;
	stats_init(&smp);
	for (int r = 0; r < (o->quick ? 1 : 3) && rc == 0; r++) {
		uint64_t t0 = stats_now_ns();
		rc = keeper_start(&k, name, "log", n);
		if (rc == 0)
			rc = open_served(name, t0 + 600 * BENCH_NS_PER_S, &c);
		if (rc == 0) {
			stats_add(&smp, stats_now_ns() - t0);
			size_t len;
			char buf[32];
			snprintf(key, sizeof(key), "hb/restore/%u", n - 1);
			if (hl_get(c, key, strlen(key), buf, sizeof(buf), &len, NULL) != 0) {
				fprintf(stderr, "%s: the last key was not restored\n", scenario);
				rc = -EIO;
			}
			hl_close(c);
		}
		keeper_stop(&k);
		seg_unlink(name);
	}
	report_one(o, scenario, "log", STATS_LATENCY, "ns", &smp);
	stats_fini(&smp);
	rmrf(k.state);
	if (rc)
		fprintf(stderr, "%s: %s\n", scenario, hl_strerror(rc));
	return rc;
}

static int
run_fsync(const struct bench_opts *o)
{
	if (!bench_wanted(o, "fsync", "disk"))
		return 0;
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/fsync-probe", base);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	static char page[4096];
	struct stats_samples smp;
	stats_init(&smp);
	int rc = 0;
	for (int i = 0; i < (o->quick ? 50 : 1000) && rc == 0; i++) {
		uint64_t t0 = stats_now_ns();
		if (write(fd, page, sizeof(page)) != (ssize_t)sizeof(page) || fdatasync(fd) < 0)
			rc = -errno;
		stats_add(&smp, stats_now_ns() - t0);
	}
	close(fd);
	unlink(path);
	report_one(o, "fsync", "disk", STATS_LATENCY, "ns", &smp);
	stats_fini(&smp);
	return rc;
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	bench_parse_args(argc, argv, &o);
	ssize_t n = readlink("/proc/self/exe", bindir, sizeof(bindir) - 1);
	if (n <= 0)
		return 1;
	bindir[n] = 0;
	*strrchr(bindir, '/') = 0;
	const char *root = getenv("HEIRLOOM_BENCH_STATE_DIR");
	snprintf(base, sizeof(base), "%s/heirloom-durability-%d", root ? root : "/var/tmp",
	         (int)getpid());
	if (mkdir(base, 0700) < 0) {
		fprintf(stderr, "heirloom_durability: mkdir %s: %s\n", base, strerror(errno));
		return 1;
	}
	bench_install_guards(3600);
	stats_print_header(stdout);
	int failed = 0;
	failed |= run_fsync(&o) != 0;
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
		failed |= run_mode(&o, modes[m]) != 0;
	failed |= run_restore(&o, 65536) != 0;
	if (!o.quick)
		failed |= run_restore(&o, 1000000) != 0;
	rmrf(base);
	return failed;
}
