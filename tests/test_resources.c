/* SPDX-License-Identifier: MIT */
/*
 * test_resources.c: resources that cannot fail under the daemons and their
 * clients (issue 21): the segment reserved at creation, defaults that fit
 * Docker's 64 MiB /dev/shm, full pools as errors, a full /dev/shm after
 * start, and a worker short of descriptors.
 *
 * Every test runs as root in a private mount namespace of this process
 * (unshare(CLONE_NEWNS), / made private) with its own small tmpfs mounted
 * on /dev/shm, so nothing on the machine is touched; the daemons and
 * clients it starts inherit the namespace. Without root the group is
 * skipped.
 */
#include "harness.h"

#include "layout.h"
#include "resources.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

static int in_namespace;

static int
group_setup(void **state)
{
	(void)state;
	if (geteuid() != 0)
		return 0;
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return 0;
	in_namespace = 1;
	return 0;
}

/* A fresh tmpfs of MIB MiB on /dev/shm (the last one is detached). */
static void
shm_mount(unsigned mib)
{
	if (!in_namespace)
		skip();
	char opts[64];
	snprintf(opts, sizeof(opts), "size=%um,mode=1777", mib);
	umount2("/dev/shm", MNT_DETACH);
	assert_int_equal(mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts), 0);
}

static int
teardown(void **state)
{
	(void)state;
	if (in_namespace)
		umount2("/dev/shm", MNT_DETACH);
	return 0;
}

static uint64_t
shm_free(void)
{
	struct statvfs v;
	assert_int_equal(statvfs("/dev/shm", &v), 0);
	return (uint64_t)v.f_bavail * v.f_frsize;
}

/* The keeper with nothing but its defaults, supervising a worker. */
static pid_t
keeper_default(const char *name, const char *sock, const char *err_path)
{
	char spawn[512];
	snprintf(spawn, sizeof(spawn), "--spawn-worker=%s", HL_WORKER_PATH);
	const char *argv[] = { HL_KEEPER_PATH, "--foreground", "--name", name,
		               "--socket",     sock,           spawn,    NULL };
	return hl_t_spawn(argv, err_path);
}

static void
sock_name(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "/tmp/hl-res-%s.sock", name);
}

/* A read-only mapping of the segment for its counters. */
static void
map_ro(const char *name, struct hl_seg *s)
{
	int fd;
	assert_int_equal(hl__seg_open_fd(name, 0, &fd), 0);
	assert_int_equal(hl__seg_map_ro(fd, s), 0);
}

static uint64_t
ld(_Atomic uint64_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

/* Stop PID with SIGTERM: it must exit by itself, with status 0. */
static void
stop_clean(pid_t pid)
{
	kill(pid, SIGTERM);
	int st = hl_t_wait_exit(pid, hl_t_ms(30000));
	if (st < 0)
		hl_t_kill9(pid);
	assert_int_equal(st, 0);
}

/* ---- 64 MiB: the defaults fit, and every pool full is an error ---- */

static void
test_default_keeper_fits_64mib_and_full_pools_are_errors(void **state)
{
	(void)state;
	shm_mount(64);
	const char *name = hl_t_name();
	char sock[128];
	sock_name(sock, sizeof(sock), name);
	pid_t keeper = keeper_default(name, sock, NULL);
	pid_t worker = hl_t_wait_serving(name, 0, hl_t_ms(20000));
	assert_true(worker > 0);

	/* Every byte reserved: the object's blocks cover its size. */
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/heirloom.%s", name);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size);
	assert_true((uint64_t)st.st_size <= 40ull << 20); /* room to spare in 64 MiB */

	struct hl_seg seg = { 0 };
	map_ro(name, &seg);
	struct hl_shm_header *h = seg.h;
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	char key[32];
	int rc = 0;
	uint32_t n;

	/* Keys: the first refusal is -ENOSPC, at the capacity. */
	for (n = 0; n <= h->max_keys && rc == 0; n++) {
		int len = snprintf(key, sizeof(key), "k%u", n);
		rc = hl_publish(c, key, (size_t)len, "v", 1, NULL, 0);
	}
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(n - 1, h->max_keys);
	assert_true(ld(&h->keys_full) >= 1);

	/* Value heap: bigger values on the keys there are. */
	static char big[4000];
	memset(big, 'x', sizeof(big));
	rc = 0;
	for (n = 0; n < h->max_keys && rc == 0; n++) {
		int len = snprintf(key, sizeof(key), "k%u", n);
		big[0] = (char)n;
		rc = hl_publish(c, key, (size_t)len, big, sizeof(big), NULL, 0);
	}
	assert_int_equal(rc, -ENOSPC);
	assert_true(ld(&h->heap_full) >= 1);

	/* Observers. */
	rc = 0;
	for (n = 0; n <= h->max_observers && rc == 0; n++) {
		hl_observer_id id;
		int len = snprintf(key, sizeof(key), "k%u", n % 64);
		rc = hl_observe(c, key, (size_t)len, 0, &id);
	}
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(n - 1, h->max_observers);
	assert_true(ld(&h->observers_full) >= 1);

	/* Endpoints: hl_open() says -ENOSPC once all are taken. */
	struct hl_client *more[HL_DEF_ENDPOINTS + 1];
	uint32_t nmore = 0;
	rc = 0;
	while (nmore < HL_DEF_ENDPOINTS + 1) {
		struct hl_open_opts o = { .timeout_ms = hl_t_ms(10000) };
		rc = hl_open(name, &o, &more[nmore]);
		if (rc)
			break;
		nmore++;
	}
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(nmore, h->max_endpoints - 1);
	for (uint32_t i = 0; i < nmore; i++)
		hl_close(more[i]);

	/* Still served by the same worker; nobody died of a signal. */
	rc = hl_publish(c, "k1", 2, "again", 5, NULL, 0);
	assert_int_equal(rc, 0);
	hl_close(c);
	struct hl_t_owner ow;
	assert_int_equal(hl_t_owner_read(name, &ow), 0);
	assert_int_equal(ow.pid, (uint32_t)worker);
	assert_int_equal(waitpid(keeper, NULL, WNOHANG), 0);
	assert_int_equal(kill(worker, 0), 0);
	hl__seg_unmap(&seg);
	stop_clean(keeper);
	hl_t_unlink(name);
}

/* ---- too small: the keeper says so and leaves nothing ---- */

static void
test_keeper_and_worker_refuse_a_segment_bigger_than_dev_shm(void **state)
{
	(void)state;
	shm_mount(16);
	uint64_t before = shm_free();
	const char *name = hl_t_name();
	char sock[128], log[128], path[128];
	sock_name(sock, sizeof(sock), name);
	snprintf(log, sizeof(log), "/tmp/hl-res-%s.log", name);
	snprintf(path, sizeof(path), "/dev/shm/heirloom.%s", name);
	unlink(log);
	const char *kargv[] = { HL_KEEPER_PATH, "--foreground",    "--name",  name, "--socket",
		                sock,           "--max-observers", "1048576", NULL };
	struct hl_layout_params p = { .max_observers = 1048576 };
	struct hl_shm_header hh;
	assert_int_equal(hl__layout_defaults(&p), 0);
	assert_int_equal(hl__layout_compute(&p, &hh), 0);
	char needs[64];
	snprintf(needs, sizeof(needs), "needs %llu bytes", (unsigned long long)hh.size);
	pid_t k = hl_t_spawn(kargv, log);
	assert_int_equal(hl_t_wait_exit(k, hl_t_ms(20000)), 5);
	assert_true(hl_t_file_has(log, needs, 0));
	assert_true(hl_t_file_has(log, "MiB free", 0));
	assert_true(hl_t_file_has(log, "--shm-size", 0));
	assert_true(hl_t_file_has(log, "heirloomctl size", 0));
	struct stat st;
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(shm_free(), before);

	const char *wargv[] = { HL_WORKER_PATH,    "--standalone", "--name", name,
		                "--max-observers", "1048576",      NULL };
	unlink(log);
	pid_t w = hl_t_spawn(wargv, log);
	assert_int_equal(hl_t_wait_exit(w, hl_t_ms(20000)), 5);
	assert_true(hl_t_file_has(log, "--shm-size", 0));
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(shm_free(), before);
	unlink(log);
}

/* ---- /dev/shm filled by someone else after start ---- */

/* Exit codes of a client process. */
enum { CL_OK = 0, CL_NO_ENDPOINT = 10, CL_BAD = 20 };

static int
one_client(const char *name, int i)
{
	struct hl_client *c;
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = hl_t_ms(30000) };
	int rc = hl_open(name, &o, &c);
	if (rc == -ENOSPC)
		return CL_NO_ENDPOINT; /* documented: every endpoint is taken */
	if (rc)
		return CL_BAD + 1;
	char key[32];
	int len = snprintf(key, sizeof(key), "c%d", i);
	hl_observer_id id;
	rc = hl_observe(c, key, (size_t)len, 0, &id);
	if (rc == 0)
		rc = hl_publish(c, key, (size_t)len, "v", 1, NULL, 0);
	struct hl_event ev;
	if (rc == 0)
		rc = hl_next(c, &ev, hl_t_ms(30000));
	hl_close(c);
	return rc == 0 ? CL_OK : CL_BAD + 2;
}

/* Run N client processes at once; each must exit with OK or the
 * documented refusal, never by a signal. */
static void
run_clients(const char *name, int first, int n)
{
	pid_t pids[64];
	assert_true(n <= 64);
	for (int i = 0; i < n; i++) {
		pids[i] = hl_t_fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0)
			_exit(one_client(name, first + i));
	}
	for (int i = 0; i < n; i++) {
		int st;
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		if (WIFSIGNALED(st))
			fail_msg("client %d died of signal %d", first + i, WTERMSIG(st));
		assert_true(WEXITSTATUS(st) == CL_OK || WEXITSTATUS(st) == CL_NO_ENDPOINT);
	}
}

static void
fill_dev_shm(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	static char buf[1 << 20];
	memset(buf, 1, sizeof(buf));
	for (size_t chunk = sizeof(buf); chunk >= 4096; chunk /= 2)
		while (write(fd, buf, chunk) == (ssize_t)chunk)
			;
	close(fd);
	assert_true(shm_free() < 4096);
}

static void
test_full_dev_shm_after_start_kills_no_client(void **state)
{
	(void)state;
	shm_mount(64);
	const char *name = hl_t_name();
	char sock[128];
	sock_name(sock, sizeof(sock), name);
	pid_t keeper = keeper_default(name, sock, NULL);
	pid_t worker = hl_t_wait_serving(name, 0, hl_t_ms(20000));
	assert_true(worker > 0);
	fill_dev_shm("/dev/shm/filler");

	for (int b = 0; b < 4; b++)
		run_clients(name, b * 25, 25);

	/* The worker still serves, the same one. */
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(c, "after", 5, "1", 1, NULL, 0), 0);
	hl_close(c);
	struct hl_t_owner ow;
	assert_int_equal(hl_t_owner_read(name, &ow), 0);
	assert_int_equal(ow.pid, (uint32_t)worker);
	assert_int_equal(kill(worker, 0), 0);
	unlink("/dev/shm/filler");
	stop_clean(keeper);
	hl_t_unlink(name);
}

/* ---- a worker with 64 descriptors and 200 clients ---- */

#define NCLIENTS 200

/* A client that stays: open, observe, one event; says it is ready, waits
 * for the go (the pipe closing), then one more event. */
static int
staying_client(const char *name, int i, int ready_fd, int go_fd)
{
	struct hl_client *c;
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = hl_t_ms(60000) };
	int rc = hl_open(name, &o, &c);
	if (rc)
		return rc == -ENOSPC ? CL_NO_ENDPOINT : CL_BAD + 1;
	char key[32];
	int len = snprintf(key, sizeof(key), "d%d", i);
	hl_observer_id id;
	struct hl_event ev;
	rc = hl_observe(c, key, (size_t)len, 0, &id);
	if (rc == 0)
		rc = hl_publish(c, key, (size_t)len, "1", 1, NULL, 0);
	if (rc == 0)
		rc = hl_next(c, &ev, hl_t_ms(60000));
	if (rc)
		return CL_BAD + 2;
	if (write(ready_fd, "r", 1) != 1)
		return CL_BAD + 3;
	char b;
	while (read(go_fd, &b, 1) > 0)
		;
	/* Not declared dead meanwhile: served again. */
	rc = hl_publish(c, key, (size_t)len, "2", 1, NULL, 0);
	if (rc == 0)
		rc = hl_next(c, &ev, hl_t_ms(60000));
	hl_close(c);
	return rc == 0 ? CL_OK : rc == HL_ESTALE ? CL_BAD + 4 : CL_BAD + 5;
}

static void
test_worker_short_of_descriptors_never_drops_a_live_client(void **state)
{
	(void)state;
	shm_mount(128);
	const char *name = hl_t_name();
	const char *argv[] = { "/usr/bin/prlimit",
		               "--nofile=64:64",
		               "--",
		               HL_WORKER_PATH,
		               "--standalone",
		               "--name",
		               name,
		               "--max-endpoints",
		               "256",
		               "--max-keys",
		               "1024",
		               "--max-observers",
		               "4096",
		               "--heap",
		               "1M",
		               "--prune-interval",
		               "0",
		               NULL };
	pid_t worker = hl_t_spawn(argv, NULL);
	assert_int_equal(hl_t_wait_ready(name, hl_t_ms(20000)), 0);

	int ready[2], go[2];
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	pid_t pids[NCLIENTS];
	for (int i = 0; i < NCLIENTS; i++) {
		pids[i] = hl_t_fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			_exit(staying_client(name, i, ready[1], go[0]));
		}
	}
	close(ready[1]);
	close(go[0]);
	int nready = 0;
	char buf[NCLIENTS];
	while (nready < NCLIENTS) {
		struct pollfd p = { .fd = ready[0], .events = POLLIN };
		if (poll(&p, 1, hl_t_ms(120000)) <= 0)
			break;
		ssize_t r = read(ready[0], buf, sizeof(buf));
		if (r <= 0)
			break; /* a client failed before it was ready: see below */
		nready += (int)r;
	}

	/* Every client was adopted, served and not declared dead (one that
	 * was gets HL_ESTALE and exits before it is ready). */
	if (nready != NCLIENTS)
		fail_msg("%d of %d clients were served (the others failed: declared dead?)", nready,
		         NCLIENTS);
	struct hl_seg seg = { 0 };
	map_ro(name, &seg);
	struct hl_shm_header *h = seg.h;
	/* The fallback was used: more clients than descriptors. */
	assert_true(ld(&h->pidfd_failures) > 0);
	assert_true(ld(&h->nofile_limit) == 64);

	/* SIGKILL every tenth; the rest go on. */
	for (int i = 0; i < NCLIENTS; i += 10)
		kill(pids[i], SIGKILL);
	close(go[1]);
	for (int i = 0; i < NCLIENTS; i++) {
		int st;
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		if (i % 10 == 0) {
			assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
			continue;
		}
		if (WIFSIGNALED(st))
			fail_msg("client %d died of signal %d", i, WTERMSIG(st));
		if (WEXITSTATUS(st) != CL_OK)
			fail_msg("client %d exited %d", i, WEXITSTATUS(st));
	}
	close(ready[0]);

	/* The killed ones are cleaned up too, polled or not. */
	int waited = 0;
	while (ld(&h->endpoints_used) != 0 && waited < hl_t_ms(60000)) {
		usleep(20000);
		waited += 20;
	}
	assert_int_equal(ld(&h->endpoints_used), 0);
	assert_int_equal(ld(&h->endpoints_polled), 0);
	hl__seg_unmap(&seg);
	assert_int_equal(hl_t_worker_stop(worker), 0);
	hl_t_unlink(name);
}

/* ---- the segment truncated while served ---- */

/* The number of lines of the file at PATH that contain both A and B. */
static int
lines_with(const char *path, const char *a, const char *b)
{
	static char buf[1 << 18];
	int fd = open(path, O_RDONLY | O_CLOEXEC), n = 0;
	if (fd < 0)
		return 0;
	ssize_t len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return 0;
	buf[len] = '\0';
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		if (strstr(line, a) && (!b || strstr(line, b)))
			n++;
	return n;
}

/* One SYNC publish served, then a member of the group shrinks the segment
 * to one page under the daemons. */
static void
publish_then_shrink(const char *name)
{
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(c, "k", 1, "v", 1, NULL, 0), 0);
	hl_close(c);
	int fd;
	assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	close(fd);
}

static void
test_truncated_segment_stops_worker_and_keeper_once(void **state)
{
	(void)state;
	shm_mount(128);
	const char *name = hl_t_name();
	char sock[128], log[128], ctl_err[128];
	sock_name(sock, sizeof(sock), name);
	snprintf(log, sizeof(log), "/tmp/hl-res-%s.log", name);
	snprintf(ctl_err, sizeof(ctl_err), "/tmp/hl-res-%s.ctl", name);
	unlink(log);
	char spawn[512];
	snprintf(spawn, sizeof(spawn), "--spawn-worker=%s", HL_WORKER_PATH);
	const char *extra[] = { spawn, "--restart-min", "10ms", "--restart-stable", "10ms", NULL };
	pid_t keeper = hl_t_keeper_startv(name, sock, extra, log);
	pid_t worker = hl_t_wait_serving(name, 0, hl_t_ms(20000));
	assert_true(worker > 0);
	publish_then_shrink(name);

	/* The keeper stops by itself, with 6, having restarted nothing. */
	assert_int_equal(hl_t_wait_exit(keeper, hl_t_ms(30000)), 6);
	char wtag[64];
	snprintf(wtag, sizeof(wtag), "heirloom-worker[%d]", (int)worker);
	assert_true(lines_with(log, wtag, "truncated") >= 1);
	assert_true(lines_with(log, "started worker pid", NULL) <= 2);
	assert_int_equal(lines_with(log, "heirloom-keeper[", "was truncated to"), 1);
	assert_int_equal(kill(worker, 0), -1);

	/* heirloomctl status names the problem. */
	unlink(ctl_err);
	const char *argv[] = { HL_CTL_PATH, "--name", name, "status", NULL };
	pid_t ctl = hl_t_spawn(argv, ctl_err);
	assert_int_equal(hl_t_wait_exit(ctl, hl_t_ms(10000)), 3);
	assert_true(lines_with(ctl_err, "truncated", NULL) >= 1);
	unlink(log);
	unlink(ctl_err);
	hl_t_unlink(name);
}

/* The same with the durability writer running (--durability log: it reads
 * the history rings every 10 ms, past the page left): the keeper stops
 * with 6 and a line that says why, never a crash. (Its checks usually see
 * the truncation first; the SIGBUS path both daemons share is tested on
 * its own below.) */
static void
test_truncated_segment_under_the_log_writer_stops_the_keeper_with_6(void **state)
{
	(void)state;
	shm_mount(128);
	const char *name = hl_t_name();
	char sock[128], log[128], dir[160], spawn[512];
	sock_name(sock, sizeof(sock), name);
	snprintf(log, sizeof(log), "/tmp/hl-res-%s.log", name);
	snprintf(dir, sizeof(dir), "/tmp/hl-res-%s.state", name);
	unlink(log);
	snprintf(spawn, sizeof(spawn), "--spawn-worker=%s", HL_WORKER_PATH);
	const char *extra[] = { spawn, "--durability", "log", "--state-dir", dir, NULL };
	pid_t keeper = hl_t_keeper_startv(name, sock, extra, log);
	assert_true(hl_t_wait_serving(name, 0, hl_t_ms(20000)) > 0);
	publish_then_shrink(name);
	assert_int_equal(hl_t_wait_exit(keeper, hl_t_ms(30000)), 6);
	assert_true(lines_with(log, "heirloom-keeper[", "truncated") >= 1);
	unlink(log);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	hl_t_unlink(name);
}

/* hl__seg_sigbus_exit(): a fault in the range (a page truncated away) is
 * one line and exit 6; a SIGBUS anywhere else still kills as before. In
 * forked children: each ends its process. */
static void
test_sigbus_in_the_segment_is_exit_6_and_elsewhere_a_signal(void **state)
{
	(void)state;
	long pg = sysconf(_SC_PAGESIZE);
	for (int inside = 1; inside >= 0; inside--) {
		int seg = memfd_create("seg", 0), other = memfd_create("other", 0);
		assert_true(seg >= 0 && other >= 0);
		assert_int_equal(ftruncate(seg, 2 * pg), 0);
		assert_int_equal(ftruncate(other, 2 * pg), 0);
		volatile char *a = mmap(NULL, 2 * pg, PROT_READ, MAP_SHARED, seg, 0);
		volatile char *b = mmap(NULL, 2 * pg, PROT_READ, MAP_SHARED, other, 0);
		assert_true(a != MAP_FAILED && b != MAP_FAILED);
		int pfd[2];
		assert_int_equal(pipe(pfd), 0);
		pid_t p = fork();
		if (p == 0) {
			dup2(pfd[1], STDERR_FILENO);
			static const char line[] = "segment gone\n";
			hl__seg_sigbus_exit((const void *)a, 2 * (size_t)pg, line,
			                    sizeof(line) - 1);
			if (ftruncate(seg, pg) || ftruncate(other, pg))
				_exit(1);
			char x = inside ? a[pg] : b[pg]; /* the page that is gone */
			(void)x;
			_exit(0);
		}
		close(pfd[1]);
		char buf[64] = "";
		ssize_t n = read(pfd[0], buf, sizeof(buf) - 1);
		int st;
		assert_int_equal(waitpid(p, &st, 0), p);
		if (inside) {
			assert_true(WIFEXITED(st));
			assert_int_equal(WEXITSTATUS(st), 6);
			assert_true(n > 0 && strstr(buf, "segment gone"));
		} else {
			assert_true(WIFSIGNALED(st));
			assert_int_equal(WTERMSIG(st), SIGBUS);
			assert_true(n <= 0);
		}
		close(pfd[0]);
		munmap((void *)a, 2 * pg);
		munmap((void *)b, 2 * pg);
		close(seg);
		close(other);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sigbus_in_the_segment_is_exit_6_and_elsewhere_a_signal),
		cmocka_unit_test_teardown(test_default_keeper_fits_64mib_and_full_pools_are_errors,
		                          teardown),
		cmocka_unit_test_teardown(
		        test_keeper_and_worker_refuse_a_segment_bigger_than_dev_shm, teardown),
		cmocka_unit_test_teardown(test_full_dev_shm_after_start_kills_no_client, teardown),
		cmocka_unit_test_teardown(
		        test_worker_short_of_descriptors_never_drops_a_live_client, teardown),
		cmocka_unit_test_teardown(test_truncated_segment_stops_worker_and_keeper_once,
		                          teardown),
		cmocka_unit_test_teardown(
		        test_truncated_segment_under_the_log_writer_stops_the_keeper_with_6,
		        teardown),
	};
	return cmocka_run_group_tests_name("resources", tests, group_setup, NULL);
}
