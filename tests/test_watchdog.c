/* SPDX-License-Identifier: MIT */
/*
 * test_watchdog.c: a hung worker is a dead worker (issue 22). The keeper's
 * watchdog kills a worker whose threads stop beating (SIGSTOP of the whole
 * worker; one shard thread parked by the --park-shard hook) and the normal
 * crash path brings a new one with nothing lost; a worker that is only
 * slow on a saturated machine is left alone; heirloomctl says "hung"; and
 * both daemons' systemd watchdog pings stop when they stop making
 * progress, as seen by a small stand-in for systemd's notify socket.
 *
 * Waits scale with HL_TEST_TIMEOUT_MULTIPLIER; nothing asserts a timing.
 * HL_TEST_SATURATE_S sets the saturated run's length (default 8 s).
 */
#include "harness.h"

#include "layout.h"
#include "notify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int
setup(void **state)
{
	return hl_t_kfx_setup(state, "watchdog");
}

/* The test's hang timeout: short, so that the suite stays quick, and
 * scaled, so that sanitizers' slower legitimate pauses stay under it. */
static int
hang_ms(void)
{
	return hl_t_ms(1500);
}

static pid_t
keeper(struct hl_t_kfx *f, int spawn, const char *const *more)
{
	static char timeout[32];
	snprintf(timeout, sizeof(timeout), "--hang-timeout=%dms", hang_ms());
	const char *extra[16];
	int n = 0;
	extra[n++] = timeout;
	extra[n++] = "--shards=2";
	if (spawn)
		extra[n++] = "--spawn-worker=" HL_WORKER_PATH;
	for (int i = 0; more && more[i] && n < 15; i++)
		extra[n++] = more[i];
	extra[n] = NULL;
	return hl_t_kfx_track(f, hl_t_keeper_startv(f->name, f->sock, extra, f->klog));
}

/* A worker through the keeper with EXTRA args, waited for until it serves. */
static pid_t
kworker(struct hl_t_kfx *f, const char *const *extra)
{
	const char *argv[16];
	int n = 0;
	argv[n++] = HL_WORKER_PATH;
	argv[n++] = "--name";
	argv[n++] = f->name;
	argv[n++] = "--socket";
	argv[n++] = f->sock;
	for (int i = 0; extra && extra[i] && n < 15; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid = hl_t_kfx_track(f, hl_t_spawn(argv, f->wlog));
	assert_int_equal(hl_t_wait_serving(f->name, 0, hl_t_ms(10000)), pid);
	return pid;
}

static void
put(struct hl_client *c, const char *key, const char *val)
{
	assert_int_equal(hl_publish(c, key, strlen(key), val, strlen(val), NULL, 0), 0);
}

static void
assert_value(struct hl_client *c, const char *key, const char *want)
{
	char buf[64];
	size_t len = 0;
	uint64_t rev;
	int rc = hl_get(c, key, strlen(key), buf, sizeof(buf) - 1, &len, &rev);
	if (rc)
		fail_msg("hl_get(%s): %s", key, hl_strerror(rc));
	buf[len] = '\0';
	assert_string_equal(buf, want);
}

/* heirloomctl status --json for our segment, checked by a Python
 * expression over d (the document). Returns its exit status (0 = true). */
static int
status_says(struct hl_t_kfx *f, const char *expr)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
	         "%s --name %s status --json | python3 -c 'import json,sys; "
	         "d=json.load(sys.stdin); sys.exit(0 if (%s) else 1)'",
	         HL_CTL_PATH, f->name, expr);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the worker stops as a whole ---- */

struct sync_pub {
	struct hl_client *c;
	int rc;
};

static void *
sync_publish(void *arg)
{
	struct sync_pub *p = arg;
	p->rc = hl_publish(p->c, "queued", 6, "once", 4, NULL, 0);
	return NULL;
}

static void
test_a_stopped_worker_is_killed_and_replaced_with_nothing_lost(void **state)
{
	struct hl_t_kfx *f = *state;
	keeper(f, 1, NULL);
	pid_t w = hl_t_wait_serving(f->name, 0, hl_t_ms(10000));
	assert_true(w > 0);

	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	struct hl_client *obs = hl_t_open(f->name, 0);
	hl_observer_id id;
	assert_int_equal(hl_observe(obs, "queued", 6, 0, &id), 0);
	/* Acknowledged writes: applied (SYNC) before the worker stops. */
	char key[16], val[16];
	for (int i = 0; i < 32; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		put(c, key, val);
	}
	struct hl_stats before;
	assert_int_equal(hl_stats(c, &before), 0);

	/* A SYNC client's publish queued while the worker is stopped: it
	 * waits (generously) and must return once, applied once. */
	struct hl_client *sc = NULL;
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = hl_t_ms(60000) };
	assert_int_equal(hl_open(f->name, &o, &sc), 0);
	struct sync_pub sp = { .c = sc, .rc = 1 };

	uint64_t t0 = hl_t_now_ms();
	assert_int_equal(kill(w, SIGSTOP), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, sync_publish, &sp), 0);

	pid_t next = hl_t_wait_serving(f->name, w, hang_ms() + hl_t_ms(15000));
	uint64_t t1 = hl_t_now_ms();
	assert_true(next > 0);
	print_message("SIGSTOP to a serving replacement: %lu ms (--hang-timeout %d ms)\n",
	              (unsigned long)(t1 - t0), hang_ms());
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(sp.rc, 0);

	/* The stopped worker is gone (the keeper, its parent, reaped it),
	 * killed for a hang, which the log says. */
	assert_true(kill(w, 0) < 0 && errno == ESRCH);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HUNG, (uint32_t)w, &r), 0);
	assert_true(r.code >= hang_ms());
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_WORKER_EXIT, (uint32_t)w, &r), 0);
	assert_int_equal(r.code, -SIGKILL);
	assert_true(hl_t_file_has(f->klog, "is hung", hl_t_ms(1000)));

	/* Every acknowledged write is there; the queued one is applied once:
	 * one event, and nothing applied twice (a second apply of the same
	 * value would count as skipped). */
	for (int i = 0; i < 32; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		assert_value(c, key, val);
	}
	assert_value(c, "queued", "once");
	struct hl_event ev;
	assert_int_equal(hl_next(obs, &ev, hl_t_ms(10000)), 0);
	assert_int_equal(ev.observer, id);
	assert_int_equal(ev.new_len, 4);
	assert_memory_equal(ev.new_value, "once", 4);
	assert_int_equal(hl_next(obs, &ev, 300), -ETIMEDOUT);
	struct hl_stats after;
	assert_int_equal(hl_stats(c, &after), 0);
	assert_int_equal(after.skipped_unchanged, before.skipped_unchanged);
	assert_int_equal(after.publishes, before.publishes + 1);

	/* And the new worker serves. */
	put(c, "after", "yes");
	assert_value(c, "after", "yes");
	assert_int_equal(status_says(f, "d[\"worker\"] == \"ready\" and d[\"serving\"]"), 0);
	hl_close(sc);
	hl_close(obs);
	hl_close(c);
}

/* ---- one shard thread deadlocked, the other serving ---- */

static void
test_one_parked_shard_thread_is_a_hang(void **state)
{
	struct hl_t_kfx *f = *state;
	keeper(f, 0, NULL);
	const char *park[] = { "--park-shard=1", NULL };
	pid_t w = kworker(f, park);

	/* Keys of both shards: those of shard 1 stay queued. */
	struct hl_client *c = hl_t_open(f->name, 0);
	char key[16], val[16];
	for (int i = 0; i < 32; i++) {
		snprintf(key, sizeof(key), "p%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		put(c, key, val);
	}
	/* The worker is killed for it (it is our child: we see the signal). */
	int st = hl_t_wait_exit(w, hang_ms() + hl_t_ms(15000));
	hl_t_kfx_untrack(f, w);
	assert_int_equal(st, 128 + SIGKILL);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HUNG, (uint32_t)w, &r), 0);
	assert_string_equal(r.text, "shard 1");
	assert_int_equal(hl_t_wait_owner(f->name, HL_ROLE_KEEPER, 0, hl_t_ms(5000)), 0);

	/* A healthy worker takes over and applies what waited. */
	kworker(f, NULL);
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	for (int i = 0; i < 32; i++) {
		snprintf(key, sizeof(key), "p%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		assert_value(c, key, val);
	}
	hl_close(c);
}

/* heirloomctl tells the truth while nobody acts on it: with the keeper
 * stopped too, the worker stays hung, and status says so. The keeper,
 * resumed, judges by the heartbeats' own times and kills it then. */
static void
test_status_says_hung_and_a_resumed_keeper_acts(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, 0, NULL);
	pid_t w = kworker(f, NULL);
	assert_int_equal(status_says(f, "d[\"worker\"] == \"ready\" and d[\"serving\"] and "
	                                "d[\"heartbeats\"][\"hang_detection\"] and "
	                                "all(t[\"state\"] == \"beating\" for t in "
	                                "d[\"heartbeats\"][\"threads\"]) and "
	                                "len(d[\"heartbeats\"][\"threads\"]) == 3"),
	                 0);
	assert_int_equal(kill(k, SIGSTOP), 0);
	assert_int_equal(kill(w, SIGSTOP), 0);
	hl_t_sleep_ms(hang_ms() + 500);
	assert_int_equal(status_says(f, "d[\"worker\"] == \"hung\" and not d[\"serving\"] and "
	                                "d[\"worker_ready\"] and "
	                                "any(t[\"state\"] == \"hung\" for t in "
	                                "d[\"heartbeats\"][\"threads\"])"),
	                 0);
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
	         "%s --name %s stats --prometheus | grep -q '^heirloom_worker_hung{segment=\"%s\"} "
	         "1$'",
	         HL_CTL_PATH, f->name, f->name);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(kill(k, SIGCONT), 0);
	int st = hl_t_wait_exit(w, hl_t_ms(15000));
	hl_t_kfx_untrack(f, w);
	assert_int_equal(st, 128 + SIGKILL);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HUNG, (uint32_t)w, &r), 0);
}

/* ---- slow is not hung ---- */

static pid_t
spawn_fn(struct hl_t_kfx *f, void (*fn)(const char *, int), const char *name, int secs)
{
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fn(name, secs);
		_exit(0);
	}
	return hl_t_kfx_track(f, pid);
}

static void
hog(const char *name, int secs)
{
	(void)name;
	uint64_t end = hl_t_now_ms() + (uint64_t)secs * 1000u;
	volatile uint64_t x = 0;
	while (hl_t_now_ms() < end)
		for (int i = 0; i < 100000; i++)
			x += (uint64_t)i;
}

static void
publisher(const char *name, int secs)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = 60000 };
	if (hl_open(name, &o, &c))
		_exit(2);
	hl_observer_id id;
	hl_observe(c, "load0", 5, 0, &id); /* events to dispatch, and to read */
	uint64_t end = hl_t_now_ms() + (uint64_t)secs * 1000u;
	char key[16], val[32];
	for (uint64_t n = 0; hl_t_now_ms() < end; n++) {
		for (int i = 0; i < 256; i++) {
			snprintf(key, sizeof(key), "load%d", i % 64);
			snprintf(val, sizeof(val), "%lu.%d", (unsigned long)n, i);
			if (hl_publish(c, key, strlen(key), val, strlen(val), NULL, 0) < 0)
				_exit(3);
		}
		struct hl_event ev;
		while (hl_next(c, &ev, 0) == 0)
			;
		if (hl_flush(c, 60000))
			_exit(4);
	}
	hl_close(c);
	_exit(0);
}

static void
test_a_busy_worker_on_a_saturated_machine_is_not_killed(void **state)
{
	struct hl_t_kfx *f = *state;
	const char *env = getenv("HL_TEST_SATURATE_S");
	int secs = env && atoi(env) > 0 ? atoi(env) : 8;
	keeper(f, 1, NULL);
	pid_t w = hl_t_wait_serving(f->name, 0, hl_t_ms(10000));
	assert_true(w > 0);
	struct hl_t_owner o0;
	assert_int_equal(hl_t_owner_read(f->name, &o0), 0);

	/* Two CPU hogs per CPU at the worker's priority, plus publishers
	 * that keep both shards busy, all bounded by SECS. */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	pid_t kids[32];
	int nk = 0;
	for (long i = 0; i < 2 * (cpus > 0 ? cpus : 1) && nk < 28; i++)
		kids[nk++] = spawn_fn(f, hog, f->name, secs);
	for (int i = 0; i < 3; i++)
		kids[nk++] = spawn_fn(f, publisher, f->name, secs);
	for (int i = 0; i < nk; i++) {
		int st = hl_t_wait_exit(kids[i], hl_t_ms(secs * 1000 + 60000));
		hl_t_kfx_untrack(f, kids[i]);
		assert_int_equal(st, 0);
	}

	/* The same worker serves: no hang record, no new hand-off. */
	struct hl_t_owner o1;
	assert_int_equal(hl_t_owner_read(f->name, &o1), 0);
	assert_int_equal(o1.pid, (uint32_t)w);
	assert_int_equal(o1.handoffs, o0.handoffs);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HUNG, (uint32_t)w, &r), -1);
	assert_int_equal(kill(w, 0), 0);
}

/* One turn of a shard thread's loop can outlast the timeout while every
 * request in it is quick: 256 publishes per client, each dispatched to
 * 60,000 observers, in one pass. The keeper counts the applied requests
 * as progress (a keeper judging by heartbeats alone kills this worker). */
static void
test_a_long_batch_of_quick_requests_is_not_a_hang(void **state)
{
	struct hl_t_kfx *f = *state;
	static char timeout[32];
	snprintf(timeout, sizeof(timeout), "--hang-timeout=%dms", hl_t_ms(300));
	const char *more[] = { timeout, NULL }; /* the last --hang-timeout wins */
	keeper(f, 1, more);
	pid_t w = hl_t_wait_serving(f->name, 0, hl_t_ms(10000));
	assert_true(w > 0);
	struct hl_client *obs = hl_t_open(f->name, 0);
	for (int i = 0; i < 60000; i++) {
		hl_observer_id id;
		int rc = hl_observe(obs, "hot", 3, 0, &id);
		if (rc)
			fail_msg("observe %d: %s", i, hl_strerror(rc));
	}
	struct hl_client *pub[4];
	for (int i = 0; i < 4; i++)
		pub[i] = hl_t_open(f->name, 0);
	char val[32];
	for (int round = 0; round < 3; round++) {
		/* Queue everything first, then let the worker at it at once. */
		for (int n = 0; n < 256; n++)
			for (int i = 0; i < 4; i++) {
				snprintf(val, sizeof(val), "%d.%d.%d", round, i, n);
				put(pub[i], "hot", val);
			}
		for (int i = 0; i < 4; i++)
			assert_int_equal(hl_flush(pub[i], hl_t_ms(60000)), 0);
	}
	struct hl_t_owner o;
	assert_int_equal(hl_t_owner_read(f->name, &o), 0);
	assert_int_equal(o.pid, (uint32_t)w);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HUNG, (uint32_t)w, &r), -1);
	for (int i = 0; i < 4; i++)
		hl_close(pub[i]);
	hl_close(obs);
}

/* ---- systemd's watchdog, seen from its notify socket ---- */

/* A stand-in for systemd's end of NOTIFY_SOCKET. */
static int
notify_listen(struct hl_t_kfx *f, char *path, size_t len)
{
	snprintf(path, len, "%s/notify.sock", f->dir);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Wait up to MS for a datagram containing WHAT; 1 when it came. */
static int
notify_wait(int fd, const char *what, int ms)
{
	uint64_t end = hl_t_now_ms() + (uint64_t)ms;
	for (;;) {
		uint64_t now = hl_t_now_ms();
		if (now >= end)
			return 0;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, (int)(end - now)) <= 0)
			continue;
		char buf[256];
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		if (strstr(buf, what))
			return 1;
	}
}

/* Start ARGV with systemd's variables for a watchdog of USEC. */
static pid_t
spawn_notified(struct hl_t_kfx *f, const char *const *argv, const char *path, uint64_t usec,
               const char *log)
{
	char u[32];
	snprintf(u, sizeof(u), "%lu", (unsigned long)usec);
	setenv("NOTIFY_SOCKET", path, 1);
	setenv("WATCHDOG_USEC", u, 1);
	pid_t pid = hl_t_kfx_track(f, hl_t_spawn(argv, log));
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	return pid;
}

static void
test_a_stopped_keeper_misses_its_watchdog_pings(void **state)
{
	struct hl_t_kfx *f = *state;
	char path[128];
	int fd = notify_listen(f, path, sizeof(path));
	const uint64_t usec = (uint64_t)hl_t_ms(500) * 1000u;
	const char *argv[] = {
		HL_KEEPER_PATH,    "--foreground", "--name", f->name,           "--socket",
		f->sock,           "--max-keys",   "1024",   "--max-observers", "4096",
		"--max-endpoints", "16",           NULL
	};
	pid_t k = spawn_notified(f, argv, path, usec, f->klog);
	assert_true(notify_wait(fd, "READY=1", hl_t_ms(10000)));
	for (int i = 0; i < 3; i++)
		assert_true(notify_wait(fd, "WATCHDOG=1", (int)(usec / 1000)));
	assert_int_equal(kill(k, SIGSTOP), 0);
	/* What was sent before the stop may still be queued: drain, then
	 * a whole watchdog period (three, to be sure) passes without one. */
	while (notify_wait(fd, "WATCHDOG=1", 50))
		;
	assert_false(notify_wait(fd, "WATCHDOG=1", (int)(3 * usec / 1000)));
	assert_int_equal(kill(k, SIGCONT), 0);
	assert_true(notify_wait(fd, "WATCHDOG=1", (int)(usec / 1000)));
	close(fd);
}

static void
test_a_worker_pings_systemd_only_while_every_thread_beats(void **state)
{
	struct hl_t_kfx *f = *state;
	char path[128];
	int fd = notify_listen(f, path, sizeof(path));
	const uint64_t usec = (uint64_t)hl_t_ms(1000) * 1000u;
	const char *healthy[] = { HL_WORKER_PATH,
		                  "--standalone",
		                  "--name",
		                  f->name,
		                  "--shards",
		                  "2",
		                  "--max-keys",
		                  "1024",
		                  "--max-observers",
		                  "4096",
		                  "--max-endpoints",
		                  "16",
		                  NULL };
	pid_t w = spawn_notified(f, healthy, path, usec, f->wlog);
	assert_true(notify_wait(fd, "READY=1", hl_t_ms(10000)));
	for (int i = 0; i < 3; i++)
		assert_true(notify_wait(fd, "WATCHDOG=1", (int)(usec / 1000)));
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_kfx_untrack(f, w);

	/* Shard 1 hangs from the start: the worker serves (READY=1: its
	 * other threads run) but stops pinging once that shard's beat is a
	 * whole period old. */
	const char *parked[] = {
		HL_WORKER_PATH, "--standalone", "--name", f->name, "--park-shard", "1", NULL
	};
	w = spawn_notified(f, parked, path, usec, f->wlog);
	assert_true(notify_wait(fd, "READY=1", hl_t_ms(10000)));
	hl_t_sleep_ms((int)(usec / 1000));
	while (notify_wait(fd, "WATCHDOG=1", 50))
		;
	assert_false(notify_wait(fd, "WATCHDOG=1", (int)(2 * usec / 1000)));
	assert_true(hl_t_file_has(f->wlog, "no systemd watchdog ping", hl_t_ms(1000)));
	close(fd);
}

/* READY=1 means recovered: the worker says it only once both parts of
 * recovery are done (worker_ready), here while part 2 is held back for a
 * second and publishes are already served. */
static void
test_worker_says_ready_only_after_recovery(void **state)
{
	struct hl_t_kfx *f = *state;
	char path[128];
	int fd = notify_listen(f, path, sizeof(path));
	const char *argv[] = { HL_WORKER_PATH,     "--standalone", "--name", f->name,
		               "--recovery-pause", "1s",           NULL };
	pid_t w = spawn_notified(f, argv, path, 0, f->wlog);
	assert_true(notify_wait(fd, "READY=1", hl_t_ms(10000)));
	struct hl_t_owner o;
	assert_int_equal(hl_t_owner_read(f->name, &o), 0);
	assert_int_equal(o.worker_ready, 1);
	assert_true(o.recoveries >= 1);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_kfx_untrack(f, w);
	close(fd);
}

/* WATCHDOG_PID names the process the watchdog is for (systemd sets it to
 * the main pid; the keeper's spawned worker inherits the variables). */
static void
test_watchdog_usec_is_honoured_only_for_its_pid(void **state)
{
	(void)state;
	char pid[32];
	setenv("WATCHDOG_USEC", "2000000", 1);
	unsetenv("WATCHDOG_PID");
	assert_int_equal(hl__sd_watchdog_usec(), 2000000);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(hl__sd_watchdog_usec(), 2000000);
	snprintf(pid, sizeof(pid), "%d", (int)getppid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(hl__sd_watchdog_usec(), 0);
	unsetenv("WATCHDOG_PID");
	setenv("WATCHDOG_USEC", "soon", 1);
	assert_int_equal(hl__sd_watchdog_usec(), 0);
	setenv("WATCHDOG_USEC", "0", 1);
	assert_int_equal(hl__sd_watchdog_usec(), 0);
	unsetenv("WATCHDOG_USEC");
	assert_int_equal(hl__sd_watchdog_usec(), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_watchdog_usec_is_honoured_only_for_its_pid),
		cmocka_unit_test_setup_teardown(
		        test_a_stopped_worker_is_killed_and_replaced_with_nothing_lost, setup,
		        hl_t_kfx_teardown),
		cmocka_unit_test_setup_teardown(test_one_parked_shard_thread_is_a_hang, setup,
		                                hl_t_kfx_teardown),
		cmocka_unit_test_setup_teardown(test_status_says_hung_and_a_resumed_keeper_acts,
		                                setup, hl_t_kfx_teardown),
		cmocka_unit_test_setup_teardown(
		        test_a_busy_worker_on_a_saturated_machine_is_not_killed, setup,
		        hl_t_kfx_teardown),
		cmocka_unit_test_setup_teardown(test_a_long_batch_of_quick_requests_is_not_a_hang,
		                                setup, hl_t_kfx_teardown),
		cmocka_unit_test_setup_teardown(test_a_stopped_keeper_misses_its_watchdog_pings,
		                                setup, hl_t_kfx_teardown),
		cmocka_unit_test_setup_teardown(
		        test_a_worker_pings_systemd_only_while_every_thread_beats, setup,
		        hl_t_kfx_teardown),
		cmocka_unit_test_setup_teardown(test_worker_says_ready_only_after_recovery, setup,
		                                hl_t_kfx_teardown),
	};
	return cmocka_run_group_tests_name("watchdog", tests, NULL, NULL);
}
