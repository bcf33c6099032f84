/* SPDX-License-Identifier: MIT */
/*
 * test_durability.c: the keeper's --durability (issue 17): a table that
 * comes back from its state directory after both daemons died and the
 * segment was removed; torn and corrupt files; power-loss cycles; write
 * faults injected by tests/faultfs.c (LD_PRELOAD).
 *
 * HL_TEST_DURABILITY_CYCLES sets the power-loss cycles per mode (default
 * 8: the suite stays short; the 500 are a manual run).
 */
#include "harness.h"
#include "layout.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int
setup(void **state)
{
	return hl_t_kfx_setup(state, "durable");
}

/* The state directory of fixture F. */
static const char *
sdir(struct hl_t_kfx *f)
{
	static char p[160];
	snprintf(p, sizeof(p), "%s/state", f->dir);
	return p;
}

/* Start the supervising keeper in MODE with EXTRA options (NULL-ended,
 * may be NULL), environment ENV ("K=V" or NULL), and wait until its
 * worker serves. Returns the keeper's pid. */
static pid_t
keeper_env(struct hl_t_kfx *f, const char *mode, const char *const *extra, const char *env)
{
	const char *args[24];
	int n = 0;
	args[n++] = "--spawn-worker=" HL_WORKER_PATH;
	args[n++] = "--durability";
	args[n++] = mode;
	args[n++] = "--state-dir";
	args[n++] = sdir(f);
	args[n++] = "--snapshot-interval";
	args[n++] = "0";
	for (int i = 0; extra && extra[i]; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	/* ENV for the keeper only: set around its start, then taken back
	 * (no allocation: a failed start jumps out of this function). */
	static char key[64], old[1024];
	int had = 0;
	if (env) {
		snprintf(key, sizeof(key), "%.*s", (int)strcspn(env, "="), env);
		had = getenv(key) != NULL;
		if (had)
			snprintf(old, sizeof(old), "%s", getenv(key));
		setenv(key, env + strlen(key) + 1, 1);
	}
	pid_t k = hl_t_kfx_track(f, hl_t_keeper_startv(f->name, f->sock, args, f->klog));
	if (env) {
		if (had)
			setenv(key, old, 1);
		else
			unsetenv(key);
	}
	assert_true(hl_t_wait_serving(f->name, 0, hl_t_ms(20000)) > 0);
	return k;
}

static pid_t
keeper(struct hl_t_kfx *f, const char *mode)
{
	return keeper_env(f, mode, NULL, NULL);
}

/* Wait until PID (not our child) is gone or a zombie. */
static void
wait_gone(pid_t pid)
{
	for (int i = 0; i < hl_t_ms(10000); i++) {
		char path[64], buf[256];
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		FILE *fp = fopen(path, "r");
		if (!fp)
			return;
		size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
		fclose(fp);
		buf[n] = 0;
		char *p = strrchr(buf, ')');
		if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
			return;
		hl_t_sleep_ms(1);
	}
	fail_msg("pid %d did not die", (int)pid);
}

/* Power loss: SIGKILL the keeper K and the worker it gave the table to,
 * at once, then remove the segment. */
/* The keeper's children (its worker, also one it just started that does
 * not own the table yet): up to MAX into OUT, their count. */
static int
children_of(pid_t k, pid_t *out, int max)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)k, (int)k);
	FILE *fp = fopen(path, "r");
	int n = 0, pid;
	while (fp && n < max && fscanf(fp, "%d", &pid) == 1)
		out[n++] = pid;
	if (fp)
		fclose(fp);
	return n;
}

static void
kill_both(struct hl_t_kfx *f, pid_t k)
{
	struct hl_t_owner o = { 0 };
	pid_t kids[8];
	kill(k, SIGSTOP); /* no new child from here on */
	int nkids = children_of(k, kids, 8);
	hl_t_owner_read(f->name, &o);
	kill(k, SIGKILL);
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGKILL);
	if (o.role == HL_ROLE_WORKER && o.pid)
		kill((pid_t)o.pid, SIGKILL);
	waitpid(k, NULL, 0);
	hl_t_kfx_untrack(f, k);
	if (o.role == HL_ROLE_WORKER && o.pid)
		wait_gone((pid_t)o.pid);
	for (int i = 0; i < nkids; i++)
		wait_gone(kids[i]);
	/* The keeper's worker may have been between two lives: any
	 * other worker of this segment goes too. */
	if (hl_t_owner_read(f->name, &o) == 0 && o.role == HL_ROLE_WORKER && o.pid) {
		kill((pid_t)o.pid, SIGKILL);
		wait_gone((pid_t)o.pid);
	}
	hl_t_unlink(f->name);
}

/* heirloomctl snapshot: its exit status. */
static int
ctl_snapshot(struct hl_t_kfx *f)
{
	const char *argv[] = {
		HL_CTL_PATH, "--name", f->name, "snapshot", "--socket", f->sock, NULL
	};
	pid_t p = hl_t_spawn(argv, f->klog);
	return hl_t_wait_exit(p, hl_t_ms(60000));
}

/* A read-only view of the header. */
struct hdr {
	int fd;
	struct hl_seg seg;
};

static void
hdr_open(struct hl_t_kfx *f, struct hdr *h)
{
	assert_int_equal(hl__seg_open_fd(f->name, 0, &h->fd), 0);
	assert_int_equal(hl__seg_map_ro(h->fd, &h->seg), 0);
}

static void
hdr_close(struct hdr *h)
{
	hl__seg_unmap(&h->seg);
	close(h->fd);
}

static uint32_t
dur_state(struct hl_t_kfx *f)
{
	struct hdr h;
	hdr_open(f, &h);
	uint32_t st = atomic_load(&h.seg.h->dur_state);
	hdr_close(&h);
	return st;
}

static int
wait_dur_state(struct hl_t_kfx *f, uint32_t want, int ms)
{
	for (int waited = 0; waited <= ms; waited += 10) {
		if (dur_state(f) == want)
			return 0;
		hl_t_sleep_ms(10);
	}
	return -1;
}

static void
put(struct hl_client *c, const char *key, const char *val)
{
	int rc = hl_publish(c, key, strlen(key), val, strlen(val), NULL, 0);
	if (rc)
		fail_msg("publish %s: %s", key, hl_strerror(rc));
}

/* KEY's value must be VAL (NULL: absent); returns its revision. */
static uint64_t
expect(struct hl_client *c, const char *key, const char *val)
{
	char buf[256];
	size_t len = 0;
	uint64_t rev = 0;
	int rc = hl_get(c, key, strlen(key), buf, sizeof(buf), &len, &rev);
	if (!val) {
		if (rc != -ENOENT)
			fail_msg("%s: expected absent, got %d (%s)", key, rc, hl_strerror(rc));
		return 0;
	}
	if (rc != 0)
		fail_msg("%s: expected '%s', got %s", key, val, hl_strerror(rc));
	if (len != strlen(val) || memcmp(buf, val, len) != 0)
		fail_msg("%s: expected '%s', got '%.*s'", key, val, (int)len, buf);
	return rev;
}

static uint64_t
revision_of(struct hl_client *c)
{
	struct hl_stats st = hl_t_stats(c);
	return st.revision;
}

/* ---- restore ---- */

/* Snapshot mode: what the last snapshot holds comes back, with its
 * revisions, after both daemons were killed and the segment removed; a
 * change after the snapshot is not promised (and here is lost). */
static void
test_snapshot_restores_after_both_killed(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "snapshot");
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(c, "a", "1");
	put(c, "b", "two");
	put(c, "a", "three");
	put(c, "empty", "");
	assert_int_equal(hl_delete(c, "b", 1), 0);
	uint64_t ra = expect(c, "a", "three");
	uint64_t re = expect(c, "empty", "");
	uint64_t rev = revision_of(c);
	assert_int_equal(ctl_snapshot(f), 0);
	put(c, "late", "x"); /* after the snapshot: may be lost */
	hl_close(c);
	kill_both(f, k);

	k = keeper(f, "snapshot");
	c = hl_t_open(f->name, HL_OPEN_SYNC);
	assert_int_equal(expect(c, "a", "three"), ra);
	assert_int_equal(expect(c, "empty", ""), re);
	expect(c, "b", NULL);
	/* Revisions go on from where they were, never back. */
	assert_true(revision_of(c) >= rev);
	put(c, "a", "four");
	assert_true(expect(c, "a", "four") > rev);
	hl_close(c);
	(void)k;
}

/* Log mode: every SYNC publish and delete comes back, with no snapshot
 * taken at all; then again after a compaction and a clean stop. */
static void
test_log_restores_every_sync_change(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "log");
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	char key[32], val[32];
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "k%d", i % 50);
		snprintf(val, sizeof(val), "v%d", i);
		put(c, key, val);
	}
	assert_int_equal(hl_delete(c, "k7", 2), 0);
	uint64_t rev = revision_of(c);
	hl_close(c);
	kill_both(f, k);

	k = keeper(f, "log");
	c = hl_t_open(f->name, HL_OPEN_SYNC);
	for (int i = 150; i < 200; i++) {
		snprintf(key, sizeof(key), "k%d", i % 50);
		snprintf(val, sizeof(val), "v%d", i);
		expect(c, key, i % 50 == 7 ? NULL : val);
	}
	assert_true(revision_of(c) >= rev);
	/* A compaction, more changes, then a clean stop (final snapshot). */
	assert_int_equal(ctl_snapshot(f), 0);
	put(c, "k1", "after-compaction");
	hl_close(c);
	kill(k, SIGTERM);
	assert_int_equal(hl_t_wait_exit(k, hl_t_ms(30000)), 0);
	hl_t_kfx_untrack(f, k);
	hl_t_unlink(f->name);

	k = keeper(f, "log");
	c = hl_t_open(f->name, HL_OPEN_SYNC);
	expect(c, "k1", "after-compaction");
	expect(c, "k7", NULL);
	snprintf(val, sizeof(val), "v%d", 199);
	expect(c, "k49", val);
	hl_close(c);
}

/* A keeper killed alone: the worker serves on, SYNC publishes are not
 * confirmed (HL_ENOTDURABLE, never a false 0); a new keeper adopts the
 * worker, snapshots first what no log holds, and from then on the table
 * is durable again, including what was applied while no keeper ran. */
static void
test_keeper_restart_covers_changes_made_without_it(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "log");
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = hl_t_ms(3000) };
	struct hl_client *c;
	assert_int_equal(hl_open(f->name, &o, &c), 0);
	put(c, "a", "1");
	kill(k, SIGKILL);
	waitpid(k, NULL, 0);
	hl_t_kfx_untrack(f, k);
	assert_int_equal(hl_publish(c, "b", 1, "2", 1, NULL, 0), HL_ENOTDURABLE);
	expect(c, "b", "2"); /* applied in memory all the same */
	k = keeper(f, "log");
	assert_int_equal(wait_dur_state(f, HL_DUR_ST_OK, hl_t_ms(10000)), 0);
	put(c, "c", "3");
	hl_close(c);
	kill_both(f, k);
	k = keeper(f, "log");
	c = hl_t_open(f->name, 0);
	expect(c, "a", "1");
	expect(c, "b", "2");
	expect(c, "c", "3");
	hl_close(c);
}

/* A worker killed in the middle of a restore leaves a half-restored
 * table and the restore flag set: the keeper restarts it, and the next
 * worker restores again over it (every record overwrites), so the table
 * ends exactly as on disk. */
static void
test_worker_killed_mid_restore_restores_again(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "log");
	struct hl_client *c = hl_t_open(f->name, 0);
	char key[32], val[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "r%d", i);
		snprintf(val, sizeof(val), "v%d", i);
		put(c, key, val);
	}
	assert_int_equal(hl_delete(c, "r5", 2), 0);
	assert_int_equal(hl_flush(c, hl_t_ms(5000)), 0);
	assert_int_equal(ctl_snapshot(f), 0);
	for (int i = 0; i < 1000; i += 3) { /* newer than the snapshot: in the log */
		snprintf(key, sizeof(key), "r%d", i);
		snprintf(val, sizeof(val), "w%d", i);
		put(c, key, val);
	}
	hl_close(c);
	c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(c, "last", "1"); /* SYNC: everything before it is on disk too */
	hl_close(c);
	kill_both(f, k);

	/* 64 records per 20 ms: the whole restore takes about 0.4 s. */
	setenv("HEIRLOOM_TEST_RESTORE_DELAY_US", "20000", 1);
	const char *args[] = { HL_KEEPER_PATH,
		               "--foreground",
		               "--name",
		               f->name,
		               "--socket",
		               f->sock,
		               "--spawn-worker=" HL_WORKER_PATH,
		               "--durability",
		               "log",
		               "--state-dir",
		               sdir(f),
		               "--restart-min",
		               "10ms",
		               NULL };
	k = hl_t_kfx_track(f, hl_t_spawn(args, f->klog));
	unsetenv("HEIRLOOM_TEST_RESTORE_DELAY_US");
	/* Kill the first worker once it has restored part of the table. */
	struct hl_t_owner o = { 0 };
	for (int i = 0; i < hl_t_ms(10000); i++) {
		if (hl_t_owner_read(f->name, &o) == 0 && o.role == HL_ROLE_WORKER && o.pid)
			break;
		hl_t_sleep_ms(1);
	}
	assert_true(o.role == HL_ROLE_WORKER && o.pid);
	hl_t_sleep_ms(200);
	struct hdr h;
	hdr_open(f, &h);
	assert_int_equal(atomic_load(&h.seg.h->dur_restore), 1); /* still restoring */
	hdr_close(&h);
	kill((pid_t)o.pid, SIGKILL);
	assert_true(hl_t_wait_serving(f->name, (pid_t)o.pid, hl_t_ms(30000)) > 0);
	c = hl_t_open(f->name, 0);
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "r%d", i);
		snprintf(val, sizeof(val), i % 3 == 0 ? "w%d" : "v%d", i);
		expect(c, key, i == 5 ? NULL : val);
	}
	expect(c, "last", "1");
	hl_close(c);
	assert_true(hl_t_file_has(f->klog, "restored", 0));
}

/* The path of the newest log file in F's state directory. */
static void
newest_log(struct hl_t_kfx *f, char *out, size_t len)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ls %s | grep '^log\\.' | sort | tail -1", sdir(f));
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char name[64] = "";
	assert_non_null(fgets(name, sizeof(name), p));
	pclose(p);
	name[strcspn(name, "\n")] = 0;
	snprintf(out, len, "%s/%s", sdir(f), name);
}

/* A record cut short at the end of the log (a crash mid-append) is
 * dropped; everything before it is restored. */
static void
test_torn_last_record_is_dropped(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "log");
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(c, "x", "1");
	put(c, "y", "2");
	hl_close(c);
	kill_both(f, k);
	char path[256];
	newest_log(f, path, sizeof(path));
	/* Half a record: a length that runs past the end, a few bytes. */
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	uint32_t torn[4] = { 200, 0x12345678, 1, 2 };
	assert_int_equal(write(fd, torn, sizeof(torn)), (ssize_t)sizeof(torn));
	close(fd);
	/* And a newer log with no header yet (created, then the crash). */
	char *dot = strrchr(path, '.');
	unsigned long long seq = strtoull(dot + 1, NULL, 16);
	snprintf(dot + 1, sizeof(path) - (size_t)(dot + 1 - path), "%016llx", seq + 1);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);

	k = keeper(f, "log");
	c = hl_t_open(f->name, HL_OPEN_SYNC);
	expect(c, "x", "1");
	expect(c, "y", "2");
	put(c, "z", "3");
	hl_close(c);
	assert_true(hl_t_file_has(f->klog, "2 torn tail dropped", hl_t_ms(2000)));
	/* Once more: the headerless log now sits between two others. */
	kill_both(f, k);
	keeper(f, "log");
	c = hl_t_open(f->name, 0);
	expect(c, "x", "1");
	expect(c, "y", "2");
	expect(c, "z", "3");
	hl_close(c);
}

/* Flip one byte at OFF from the end of PATH. */
static void
flip(const char *path, off_t from_end)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	uint8_t b;
	off_t at = st.st_size - from_end;
	assert_int_equal(pread(fd, &b, 1, at), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, at), 1);
	close(fd);
}

/* Publish key0..key<N-1> = VAL (SYNC), through a client of its own. */
static void
put_keys(struct hl_t_kfx *f, int n, const char *val)
{
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	char key[32];
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key%d", i);
		put(c, key, val);
	}
	hl_close(c);
}

/* Start the keeper expecting it to refuse (exit 7) and create nothing;
 * EXTRA: more options (NULL-terminated), or NULL. */
static void
expect_refused_with(struct hl_t_kfx *f, const char *mode, const char *why, const char *const *extra)
{
	const char *argv[24] = { HL_KEEPER_PATH,
		                 "--foreground",
		                 "--name",
		                 f->name,
		                 "--socket",
		                 f->sock,
		                 "--spawn-worker=" HL_WORKER_PATH,
		                 "--durability",
		                 mode,
		                 "--state-dir",
		                 sdir(f),
		                 NULL };
	int n = 11;
	for (int i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t p = hl_t_spawn(argv, f->klog);
	assert_int_equal(hl_t_wait_exit(p, hl_t_ms(20000)), 7);
	assert_true(hl_t_file_has(f->klog, why, 0));
	/* Never loaded in part: no segment was left. */
	int fd;
	assert_int_equal(hl__seg_open_fd(f->name, 0, &fd), -ENOENT);
}

static void
expect_refused(struct hl_t_kfx *f, const char *mode, const char *why)
{
	expect_refused_with(f, mode, why, NULL);
}

/* A snapshot with one flipped byte is refused whole, with a clear error,
 * and the keeper creates no segment. */
static void
test_corrupt_snapshot_is_refused(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "snapshot");
	put_keys(f, 20, "some value bytes");
	assert_int_equal(ctl_snapshot(f), 0);
	kill_both(f, k);
	char path[256];
	snprintf(path, sizeof(path), "%s/snapshot", sdir(f));
	flip(path, 100); /* inside a record, before the END record */
	expect_refused(f, "snapshot", "refusing it whole");
}

/* A bad record in the middle of a log (more data after it) is not a torn
 * append: the state is refused. */
static void
test_corrupt_log_middle_is_refused(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "log");
	put_keys(f, 20, "some value bytes");
	kill_both(f, k);
	char path[256];
	newest_log(f, path, sizeof(path));
	flip(path, 300);
	expect_refused(f, "log", "not a torn append");
}

/* A state with more keys than the new segment holds is refused at start
 * with what does not fit (not a worker that fails its restore and is
 * restarted for ever), and the files are left as they were: a keeper with
 * the capacity restores every key. */
static void
test_state_larger_than_the_capacities_is_refused_at_start(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, "log");
	put_keys(f, 40, "v");
	assert_int_equal(ctl_snapshot(f), 0);
	/* And a log on top of the snapshot: the count replays both. */
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(c, "key40", "v");
	assert_int_equal(hl_delete(c, "key0", 4), 0);
	hl_close(c);
	kill_both(f, k);
	const char *small[] = { "--max-keys", "39", NULL };
	expect_refused_with(f, "log", "40 keys, above --max-keys 39", small);
	const char *fits[] = { "--max-keys", "64", NULL };
	k = keeper_env(f, "log", fits, NULL);
	c = hl_t_open(f->name, HL_OPEN_SYNC);
	expect(c, "key0", NULL);
	char key[32];
	for (int i = 1; i <= 40; i++) {
		snprintf(key, sizeof(key), "key%d", i);
		expect(c, key, "v");
	}
	hl_close(c);
	kill_both(f, k);
}

/* ---- power loss ---- */

#define PL_KEYS 16

struct plboard {
	struct hl_t_fail fail;
	_Atomic uint64_t acked[PL_KEYS]; /* highest value a SYNC publish acknowledged */
	_Atomic uint64_t sent[PL_KEYS];  /* highest value ever sent */
};

static uint64_t
read_u64(struct hl_client *c, int i)
{
	char key[16], buf[32];
	size_t len = 0;
	snprintf(key, sizeof(key), "pl%d", i);
	int rc = hl_get(c, key, strlen(key), buf, sizeof(buf) - 1, &len, NULL);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		fail_msg("%s: %s", key, hl_strerror(rc));
	buf[len] = 0;
	return strtoull(buf, NULL, 10);
}

/* The client of a cycle: SYNC publishes of increasing numbers to every
 * key in turn, recording each acknowledged one, until it is killed. */
static _Noreturn void
pl_client(const char *name, struct plboard *b)
{
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = 2000 };
	struct hl_client *c;
	if (hl_open(name, &o, &c) != 0)
		_exit(0);
	for (uint64_t n = 0;; n++) {
		int i = (int)(n % PL_KEYS);
		uint64_t v = atomic_load(&b->sent[i]) + 1;
		atomic_store(&b->sent[i], v);
		char key[16], val[32];
		snprintf(key, sizeof(key), "pl%d", i);
		snprintf(val, sizeof(val), "%" PRIu64, v);
		if (hl_publish(c, key, strlen(key), val, strlen(val), NULL, 0) == 0)
			atomic_store(&b->acked[i], v);
	}
}

static int
cycles(void)
{
	const char *e = getenv("HL_TEST_DURABILITY_CYCLES");
	return e && atoi(e) > 0 ? atoi(e) : 8;
}

/* Kill both daemons at random points (while a client publishes SYNC,
 * while a snapshot or a compaction is written, mid-append), remove the
 * segment, start again: in log mode no acknowledged publish is lost; in
 * snapshot mode nothing acknowledged before the last completed snapshot. */
static void
power_loss(struct hl_t_kfx *f, const char *mode)
{
	int log = strcmp(mode, "log") == 0;
	struct plboard *b = hl_t_shared(sizeof(*b));
	/* Slow snapshots, compacted often: kills land inside them. */
	static const char *const extra[] = { "--compact-size", "4096", NULL };
	uint64_t floor[PL_KEYS] = { 0 }, start[PL_KEYS] = { 0 };
	unsigned seed = (unsigned)getpid();
	uint64_t lost_checked = 0, acked_total = 0;
	int n = cycles();
	for (int cyc = 0; cyc < n; cyc++) {
		pid_t k = keeper_env(f, mode, log ? extra : NULL,
		                     "HEIRLOOM_TEST_SNAPSHOT_DELAY_US=30000");
		struct hl_client *c = hl_t_open(f->name, 0);
		for (int i = 0; i < PL_KEYS; i++) {
			uint64_t v = read_u64(c, i);
			uint64_t want = log ? atomic_load(&b->acked[i]) : floor[i];
			if (v < want)
				fail_msg("cycle %d (%s): pl%d is %" PRIu64 " after the restart, "
				         "but %" PRIu64 " was durably acknowledged",
				         cyc, mode, i, v, want);
			if (v > atomic_load(&b->sent[i]))
				fail_msg("cycle %d: pl%d is %" PRIu64 ", never sent", cyc, i, v);
			/* SYNC publishes acknowledged in the cycle before. */
			acked_total += atomic_load(&b->acked[i]) - start[i];
			/* Go on from what survived. */
			atomic_store(&b->sent[i], v);
			atomic_store(&b->acked[i], v);
			floor[i] = v;
			start[i] = v;
			lost_checked++;
		}
		hl_close(c);
		pid_t cl = hl_t_fork();
		if (cl == 0)
			pl_client(f->name, b);
		if (log && cyc == 0) {
			/* At least one compaction of the writer's own (past
			 * --compact-size) completes before the first kill, however
			 * slow the machine; later ones are killed at random. */
			uint64_t snaps = 0;
			for (int w = 0; w < hl_t_ms(20000) && !snaps; w += 10) {
				struct hdr h;
				hdr_open(f, &h);
				snaps = atomic_load(&h.seg.h->snapshots);
				hdr_close(&h);
				hl_t_sleep_ms(10);
			}
			assert_true(snaps > 0);
		}
		int run_ms = 20 + (int)(rand_r(&seed) % 200);
		if (!log && rand_r(&seed) % 2) {
			/* A snapshot completes: what was acknowledged before it
			 * was asked for must survive whatever follows. */
			hl_t_sleep_ms(run_ms / 2);
			uint64_t before[PL_KEYS];
			for (int i = 0; i < PL_KEYS; i++)
				before[i] = atomic_load(&b->acked[i]);
			if (ctl_snapshot(f) == 0)
				memcpy(floor, before, sizeof(floor));
			hl_t_sleep_ms(run_ms / 2);
		} else if (!log) {
			/* Killed while a snapshot is being written. */
			const char *argv[] = { HL_CTL_PATH, "--name", f->name, "snapshot",
				               "--socket",  f->sock,  NULL };
			pid_t p = hl_t_spawn(argv, NULL);
			hl_t_sleep_ms(run_ms);
			kill(p, SIGKILL);
			waitpid(p, NULL, 0);
		} else {
			hl_t_sleep_ms(run_ms);
		}
		kill(cl, SIGKILL);
		kill_both(f, k);
		waitpid(cl, NULL, 0);
	}
	/* Log mode compacted (--compact-size 4096) while it was killed. */
	char snap[192];
	snprintf(snap, sizeof(snap), "%s/snapshot", sdir(f));
	struct stat st;
	if (log)
		assert_int_equal(stat(snap, &st), 0);
	print_message("power loss (%s): %d cycles, %" PRIu64 " SYNC publishes acknowledged, "
	              "%" PRIu64 " key checks, none lost\n",
	              mode, n, acked_total, lost_checked);
}

static void
test_power_loss_log_loses_no_sync_publish(void **state)
{
	power_loss(*state, "log");
}

static void
test_power_loss_snapshot_keeps_last_snapshot(void **state)
{
	power_loss(*state, "snapshot");
}

/* ---- faults (tests/faultfs.c) ---- */

/* Set the shim's fault: "" (none), "enospc", "eio", "short". */
static void
fault(struct hl_t_kfx *f, const char *what)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/fault", f->dir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(what, fp);
	fclose(fp);
}

static void
faults(struct hl_t_kfx *f, const char *mode, const char *what)
{
	char env[512], ctl[160];
	snprintf(ctl, sizeof(ctl), "%s/fault", f->dir);
	fault(f, "");
	setenv("HL_FAULT_CTL", ctl, 1);
	setenv("HL_FAULT_DIR", sdir(f), 1);
	/* Under ASan the shim comes before its runtime in the link order,
	 * which ASan refuses unless told it is deliberate. */
	const char *asan = getenv("ASAN_OPTIONS");
	char asan_old[1024] = "", asan_new[1100];
	if (asan)
		snprintf(asan_old, sizeof(asan_old), "%s", asan);
	snprintf(asan_new, sizeof(asan_new), "%s%sverify_asan_link_order=0", asan_old,
	         asan_old[0] ? ":" : "");
	setenv("ASAN_OPTIONS", asan_new, 1);
	snprintf(env, sizeof(env), "LD_PRELOAD=%s", HL_FAULTFS_PATH);
	pid_t k = keeper_env(f, mode, NULL, env);
	unsetenv("HL_FAULT_CTL");
	unsetenv("HL_FAULT_DIR");
	if (asan)
		setenv("ASAN_OPTIONS", asan_old, 1);
	else
		unsetenv("ASAN_OPTIONS");
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = hl_t_ms(5000) };
	struct hl_client *c;
	assert_int_equal(hl_open(f->name, &o, &c), 0);
	put(c, "before", "1");
	assert_int_equal(wait_dur_state(f, HL_DUR_ST_OK, hl_t_ms(5000)), 0);

	fault(f, what);
	if (strcmp(mode, "snapshot") == 0)
		assert_int_not_equal(ctl_snapshot(f), 0);
	/* The change is applied in memory; in log mode the SYNC publish says
	 * it is not on disk. */
	int rc = hl_publish(c, "during", 6, "2", 1, NULL, 0);
	if (strcmp(mode, "log") == 0)
		assert_int_equal(rc, HL_ENOTDURABLE);
	else
		assert_int_equal(rc, 0);
	assert_int_equal(wait_dur_state(f, HL_DUR_ST_FAILED, hl_t_ms(5000)), 0);
	expect(c, "during", "2");
	/* The worker keeps serving; the keeper lives. */
	rc = hl_publish(c, "still", 5, "3", 1, NULL, 0);
	assert_true(rc == 0 || (strcmp(mode, "log") == 0 && rc == HL_ENOTDURABLE));
	expect(c, "still", "3");
	assert_int_equal(kill(k, 0), 0);
	assert_true(hl_t_file_has(f->klog, "NOT durable", hl_t_ms(2000)));
	/* heirloomctl status says so. */
	char out[160], cmd[512];
	snprintf(out, sizeof(out), "%s/status.json", f->dir);
	snprintf(cmd, sizeof(cmd), "%s --name %s --json status > %s", HL_CTL_PATH, f->name, out);
	assert_int_equal(system(cmd), 0);
	assert_true(hl_t_file_has(out, "\"durable\": false", 0) ||
	            hl_t_file_has(out, "\"durable\":false", 0));

	/* The fault clears: the writer starts again and is durable. */
	fault(f, "");
	assert_int_equal(wait_dur_state(f, HL_DUR_ST_OK, hl_t_ms(10000)), 0);
	put(c, "after", "4");
	hl_close(c);
	kill_both(f, k);
	k = keeper(f, mode);
	assert_int_equal(hl_open(f->name, &o, &c), 0);
	if (strcmp(mode, "log") == 0) {
		expect(c, "during", "2");
		expect(c, "after", "4");
	}
	hl_close(c);
}

static void
test_fault_enospc_log(void **state)
{
	faults(*state, "log", "enospc");
}

static void
test_fault_eio_log(void **state)
{
	faults(*state, "log", "eio");
}

static void
test_fault_short_write_log(void **state)
{
	faults(*state, "log", "short");
}

static void
test_fault_fsync_eio_log(void **state)
{
	faults(*state, "log", "fsync");
}

static void
test_fault_enospc_snapshot(void **state)
{
	faults(*state, "snapshot", "enospc");
}

static void
test_fault_rename_snapshot(void **state)
{
	faults(*state, "snapshot", "rename");
}

/* Mode none: no state directory is made, nothing is written. */
static void
test_none_writes_nothing(void **state)
{
	struct hl_t_kfx *f = *state;
	keeper(f, "none");
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(c, "a", "1");
	hl_close(c);
	struct stat st;
	assert_int_equal(stat(sdir(f), &st), -1);
	assert_int_not_equal(ctl_snapshot(f), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, hl_t_kfx_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_snapshot_restores_after_both_killed),
		T(test_log_restores_every_sync_change),
		T(test_keeper_restart_covers_changes_made_without_it),
		T(test_worker_killed_mid_restore_restores_again),
		T(test_torn_last_record_is_dropped),
		T(test_corrupt_snapshot_is_refused),
		T(test_corrupt_log_middle_is_refused),
		T(test_state_larger_than_the_capacities_is_refused_at_start),
		T(test_power_loss_log_loses_no_sync_publish),
		T(test_power_loss_snapshot_keeps_last_snapshot),
		T(test_fault_enospc_log),
		T(test_fault_eio_log),
		T(test_fault_short_write_log),
		T(test_fault_fsync_eio_log),
		T(test_fault_enospc_snapshot),
		T(test_fault_rename_snapshot),
		T(test_none_writes_nothing),
	};
	return cmocka_run_group_tests_name("durability", tests, NULL, NULL);
}
