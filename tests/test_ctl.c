/* SPDX-License-Identifier: MIT */
/*
 * test_ctl.c: heirloomctl as a script sees it: exit codes, stdout, stderr
 * and --json, run as a real process (fork/exec of HL_CTL_PATH) against a
 * real standalone worker. JSON is checked by Python's json module and the
 * Prometheus exposition by tests/prom_check.py (Debian's /usr/bin/python3
 * with python3-prometheus-client), never by eye.
 */
#include "harness.h"

#include "segment.h"

#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROM_CHECK HL_SOURCE_DIR "/tests/prom_check.py"

/* ---- running a command ---- */

struct proc {
	pid_t pid;
	int out_fd, err_fd;
};

struct run {
	int status; /* exit code, or 128 + signal */
	char *out, *err;
	size_t out_len, err_len;
};

/* Who the next spawn() runs as: 0 ourselves; else uid/gid nobody, with
 * as_group as its only supplementary group ((gid_t)-1: none). */
#define NOBODY 65534
static int as_nobody;
static gid_t as_group = (gid_t)-1;

/* Start ARGV (argv[0] is searched in PATH when it has no '/'), IN on its
 * stdin (or /dev/null), stdout and stderr to pipes. */
static void
spawn(struct proc *p, const char *const *argv, const void *in, size_t in_len)
{
	int o[2], e[2], i[2];
	assert_int_equal(pipe2(o, O_CLOEXEC), 0);
	assert_int_equal(pipe2(e, O_CLOEXEC), 0);
	assert_int_equal(pipe2(i, O_CLOEXEC), 0);
	p->pid = hl_t_fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		dup2(i[0], 0);
		dup2(o[1], 1);
		dup2(e[1], 2);
		if (as_nobody) {
			/* Opened as root and run through the descriptor: nobody
			 * need not reach the build tree (a clone in /root, mode
			 * 0700, as on a fresh Debian where root runs the suite). */
			int exe = strchr(argv[0], '/') ? open(argv[0], O_PATH | O_CLOEXEC) : -1;
			gid_t g = as_group;
			if (setgroups(g == (gid_t)-1 ? 0 : 1, &g) < 0 || setgid(NOBODY) < 0 ||
			    setuid(NOBODY) < 0 || getuid() != NOBODY) {
				dprintf(2, "cannot become nobody: %s\n", strerror(errno));
				_exit(127);
			}
			if (exe >= 0)
				fexecve(exe, (char *const *)argv, environ);
		}
		execvp(argv[0], (char *const *)argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	close(i[0]);
	/* Inputs are small (well under a pipe's 64 KiB), so this cannot block
	 * on a child that does not read. */
	if (in_len)
		assert_int_equal(write(i[1], in, in_len), (ssize_t)in_len);
	close(i[1]);
	p->out_fd = o[0];
	p->err_fd = e[0];
}

static void
append(char **buf, size_t *len, const char *data, size_t n)
{
	*buf = realloc(*buf, *len + n + 1);
	assert_non_null(*buf);
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* Collect everything P writes and its exit status, within TIMEOUT_MS. */
static void
finish(struct proc *p, struct run *r, int timeout_ms)
{
	memset(r, 0, sizeof(*r));
	append(&r->out, &r->out_len, "", 0);
	append(&r->err, &r->err_len, "", 0);
	uint64_t deadline = hl_t_now_ms() + (uint64_t)timeout_ms;
	/* A test may have closed stdout's pipe already (a reader gone). */
	int open_fds = (p->out_fd >= 0) + (p->err_fd >= 0);
	struct pollfd pf[2] = { { .fd = p->out_fd, .events = POLLIN },
		                { .fd = p->err_fd, .events = POLLIN } };
	while (open_fds > 0 && hl_t_now_ms() < deadline) {
		if (poll(pf, 2, 50) < 0 && errno != EINTR)
			break;
		for (int k = 0; k < 2; k++) {
			if (pf[k].fd < 0 || !(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			char buf[4096];
			ssize_t n = read(pf[k].fd, buf, sizeof(buf));
			if (n > 0) {
				if (k == 0)
					append(&r->out, &r->out_len, buf, (size_t)n);
				else
					append(&r->err, &r->err_len, buf, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				close(pf[k].fd);
				pf[k].fd = -1;
				open_fds--;
			}
		}
	}
	for (int k = 0; k < 2; k++)
		if (pf[k].fd >= 0)
			close(pf[k].fd);
	int left = (int)(deadline > hl_t_now_ms() ? deadline - hl_t_now_ms() : 0);
	r->status = hl_t_wait_exit(p->pid, left + 100);
	if (r->status < 0) {
		hl_t_kill9(p->pid);
		fail_msg("pid %d did not exit within %d ms; stdout: %s; stderr: %s", (int)p->pid,
		         timeout_ms, r->out, r->err);
	}
}

static void
run_free(struct run *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

static void
runv(struct run *r, const char *const *argv, const void *in, size_t in_len)
{
	struct proc p;
	spawn(&p, argv, in, in_len);
	finish(&p, r, hl_t_ms(20000));
}

/* argv for heirloomctl --name NAME ARGS... (NULL-terminated). */
static void
ctl_argv(const char **argv, const char *name, va_list ap)
{
	int n = 0;
	argv[n++] = HL_CTL_PATH;
	argv[n++] = "--name";
	argv[n++] = name;
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && n < 30)
		argv[n++] = a;
	argv[n] = NULL;
}

/* Run heirloomctl --name NAME ARGS... to completion. */
static void
ctl(struct run *r, const char *name, ...)
{
	const char *argv[32];
	va_list ap;
	va_start(ap, name);
	ctl_argv(argv, name, ap);
	va_end(ap);
	runv(r, argv, NULL, 0);
}

/* Run heirloomctl --name NAME ARGS... with IN (N bytes) on its stdin. */
static void
ctl_in(struct run *r, const void *in, size_t n, const char *name, ...)
{
	const char *argv[32];
	va_list ap;
	va_start(ap, name);
	ctl_argv(argv, name, ap);
	va_end(ap);
	runv(r, argv, in, n);
}

/* Start heirloomctl --name NAME ARGS... without waiting. */
static void
ctl_start(struct proc *p, const char *name, ...)
{
	const char *argv[32];
	va_list ap;
	va_start(ap, name);
	ctl_argv(argv, name, ap);
	va_end(ap);
	spawn(p, argv, NULL, 0);
}

#define assert_exit(r, code)                                                                       \
	do {                                                                                       \
		if ((r)->status != (code))                                                         \
			fail_msg("exit %d, expected %d; stdout: %s; stderr: %s", (r)->status,      \
			         (code), (r)->out, (r)->err);                                      \
	} while (0)

#define assert_contains(hay, needle)                                                               \
	do {                                                                                       \
		if (!strstr((hay), (needle)))                                                      \
			fail_msg("'%s' not found in: %s", (needle), (hay));                        \
	} while (0)

/* Debian's python3 (which sees python3-prometheus-client) when present. */
static const char *
python(void)
{
	return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

/* Parse DATA as one JSON document d (LINES: each line one document, d the
 * list of them) and assert the Python expression EXPR on it. Returns the
 * checker's exit status: 0 when DATA parses and EXPR holds. */
static int
json_check(const char *data, int lines, const char *expr)
{
	char prog[2048];
	snprintf(prog, sizeof(prog),
	         "import json, sys\n"
	         "raw = sys.stdin.buffer.read().decode('utf-8')\n"
	         "d = [json.loads(l) for l in raw.splitlines()] if %d else json.loads(raw)\n"
	         "assert (%s), d\n",
	         lines, expr);
	const char *argv[] = { python(), "-c", prog, NULL };
	struct run r;
	runv(&r, argv, data, strlen(data));
	if (r.status != 0)
		print_message("json check '%s' failed on: %s\n%s\n", expr, data, r.err);
	int st = r.status;
	run_free(&r);
	return st;
}

/* ---- fixtures ---- */

struct fx {
	char name[64];
	pid_t worker;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->name, sizeof(f->name), "%s", hl_t_name());
	f->worker = hl_t_worker_startv(f->name, hl_t_small);
	*state = f;
	return 0;
}

/* The fixture with the smallest history max-value 4096 allows (16 KiB a
 * shard): a few dozen large values overrun it. */
static int
setup_small_history(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->name, sizeof(f->name), "%s", hl_t_name());
	const char *args[32];
	int n = 0;
	for (; hl_t_small[n]; n++)
		args[n] = hl_t_small[n];
	args[n++] = "--history";
	args[n++] = "16384";
	args[n] = NULL;
	f->worker = hl_t_worker_startv(f->name, args);
	*state = f;
	return 0;
}

/* A name with no segment and no worker. */
static int
setup_bare(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->name, sizeof(f->name), "%s", hl_t_name());
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	as_nobody = 0; /* a failed test may have left it set */
	as_group = (gid_t)-1;
	if (f->worker > 0)
		hl_t_worker_stop(f->worker);
	hl_t_unlink(f->name);
	free(f);
	return 0;
}

static void
stop_worker(struct fx *f)
{
	assert_int_equal(hl_t_worker_stop(f->worker), 0);
	f->worker = 0;
}

static void
shm_path(const struct fx *f, char *buf, size_t len)
{
	snprintf(buf, len, "/dev/shm/heirloom.%s", f->name);
}

static void
write_file(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

/* Claims ever made on the segment: each hl_open() moves one endpoint's
 * claim generation up by one, at once and with no worker involved. */
static uint64_t
claims_made(const char *name)
{
	int fd;
	struct hl_seg s;
	assert_int_equal(hl__seg_open_fd(name, 0, &fd), 0);
	assert_int_equal(hl__seg_map_ro(fd, &s), 0);
	uint64_t sum = 0;
	for (uint32_t e = 0; e < s.h->max_endpoints; e++)
		sum += HL_CLAIM_GEN(atomic_load(&hl__claim(&s, e)->word));
	hl__seg_unmap(&s);
	close(fd);
	return sum;
}

/* Wait until the segment has at least N observers. */
static void
wait_observers(const char *name, uint64_t n)
{
	struct hl_client *c = hl_t_open(name, 0);
	uint64_t deadline = hl_t_now_ms() + (uint64_t)hl_t_ms(10000);
	struct hl_stats st;
	do {
		assert_int_equal(hl_stats(c, &st), 0);
		if (st.observers >= n)
			break;
		usleep(10000);
	} while (hl_t_now_ms() < deadline);
	hl_close(c);
	if (st.observers < n)
		fail_msg("%llu observers, expected %llu", (unsigned long long)st.observers,
		         (unsigned long long)n);
}

/* ---- status ---- */

static void
test_status_shows_capacities_and_owner(void **state)
{
	struct fx *f = *state;
	struct run r;
	char want[64];
	ctl(&r, f->name, "status", NULL);
	assert_exit(&r, 0);
	assert_contains(r.out, "keys: 4096");
	assert_contains(r.out, "observers: 65536");
	assert_contains(r.out, "endpoints: 64");
	assert_contains(r.out, "heap_bytes: 4194304");
	assert_contains(r.out, "role: worker");
	snprintf(want, sizeof(want), "pid: %d\n  alive: yes", (int)f->worker);
	assert_contains(r.out, want);
	assert_contains(r.out, "serving: yes");
	run_free(&r);

	ctl(&r, f->name, "--json", "status", NULL);
	assert_exit(&r, 0);
	char expr[512];
	snprintf(expr, sizeof(expr),
	         "d['capacities']['keys'] == 4096 and d['capacities']['observers'] == 65536 and "
	         "d['capacities']['endpoints'] == 64 and d['segment']['layout_version'] == %u and "
	         "d['owner']['role'] == 'worker' and d['owner']['pid'] == %d and "
	         "d['owner']['alive'] is True and d['serving'] is True and "
	         "isinstance(d['log'], list)",
	         HL_LAYOUT_VERSION, (int)f->worker);
	assert_int_equal(json_check(r.out, 0, expr), 0);
	run_free(&r);
}

static void
test_status_works_with_no_worker(void **state)
{
	struct fx *f = *state;
	stop_worker(f);
	struct run r;
	ctl(&r, f->name, "--json", "status", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0,
	                            "d['owner']['role'] == 'none' and d['serving'] is False and "
	                            "d['capacities']['keys'] == 4096"),
	                 0);
	run_free(&r);
}

static void
test_status_after_worker_crash_says_owner_dead(void **state)
{
	struct fx *f = *state;
	hl_t_kill9(f->worker);
	f->worker = 0;
	struct run r;
	ctl(&r, f->name, "--json", "status", NULL);
	assert_exit(&r, 0);
	/* The owner record still names the dead worker, and worker_ready was
	 * never cleared: status must not call that serving. */
	assert_int_equal(
	        json_check(r.out, 0,
	                   "d['owner']['role'] == 'worker' and "
	                   "d['owner']['alive'] is False and d['worker_ready'] is True and "
	                   "d['serving'] is False"),
	        0);
	run_free(&r);
}

/* ---- get / set / del ---- */

static void
test_set_then_get_round_trips(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "greeting", "hello, world", "--meta", "m1", NULL);
	assert_exit(&r, 0);
	assert_int_equal(r.out_len, 0);
	run_free(&r);
	ctl(&r, f->name, "get", "greeting", NULL);
	assert_exit(&r, 0);
	assert_int_equal(r.out_len, strlen("hello, world"));
	assert_memory_equal(r.out, "hello, world", r.out_len);
	run_free(&r);

	ctl(&r, f->name, "set", "greeting", "h\xc3\xa9 \"x\"", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "--json", "get", "greeting", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0,
	                            "d['value'] == 'h\\u00e9 \"x\"' and d['length'] == 7 and "
	                            "d['revision'] == 2 and 'value_hex' not in d"),
	                 0);
	run_free(&r);
}

static void
test_get_of_missing_key_exits_1(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "get", "nothing-here", NULL);
	assert_exit(&r, 1);
	assert_int_equal(r.out_len, 0);
	assert_contains(r.err, "heirloomctl: get: not found");
	run_free(&r);
	ctl(&r, f->name, "--json", "get", "nothing-here", NULL);
	assert_exit(&r, 1);
	assert_int_equal(json_check(r.out, 0, "d['error'] == 'ENOENT' and d['exit_code'] == 1"), 0);
	run_free(&r);
}

static void
test_del_then_get_exits_1(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "doomed", "v", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "del", "doomed", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "get", "doomed", NULL);
	assert_exit(&r, 1);
	assert_contains(r.err, "not found");
	run_free(&r);
	/* A second delete finds nothing to delete. */
	ctl(&r, f->name, "del", "doomed", NULL);
	assert_exit(&r, 1);
	run_free(&r);
}

/* set/del --if-rev: success prints the new revision; a conflict exits 5,
 * changes nothing and prints the current revision (also in --json). */
static void
test_if_rev_conflict_exits_5_with_the_current_revision(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "cas", "v1", "--if-rev", "0", NULL);
	assert_exit(&r, 0);
	unsigned long r1 = strtoul(r.out, NULL, 10);
	assert_true(r1 > 0);
	run_free(&r);
	ctl(&r, f->name, "get", "cas", "--rev", NULL);
	assert_exit(&r, 0);
	assert_int_equal(strtoul(r.out, NULL, 10), r1);
	run_free(&r);
	ctl(&r, f->name, "set", "cas", "v2", "--if-rev", "0", NULL);
	assert_exit(&r, 5);
	assert_int_equal(strtoul(r.out, NULL, 10), r1);
	assert_contains(r.err, "conflict");
	run_free(&r);
	ctl(&r, f->name, "--json", "del", "cas", "--if-rev", "999999", NULL);
	assert_exit(&r, 5);
	assert_contains(r.out, "\"HL_ECONFLICT\"");
	char want[64];
	snprintf(want, sizeof(want), "\"revision\":%lu", r1);
	assert_contains(r.out, want);
	run_free(&r);
	ctl(&r, f->name, "get", "cas", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "v1");
	run_free(&r);
	snprintf(want, sizeof(want), "%lu", r1);
	ctl(&r, f->name, "del", "cas", "--if-rev", want, NULL);
	assert_exit(&r, 0);
	assert_true(strtoul(r.out, NULL, 10) > r1);
	run_free(&r);
	ctl(&r, f->name, "get", "cas", "--rev", NULL);
	assert_exit(&r, 1);
	assert_string_equal(r.out, "0\n");
	run_free(&r);
	ctl(&r, f->name, "set", "cas", "v", "--if-rev", "x", NULL);
	assert_exit(&r, 2);
	run_free(&r);
	ctl(&r, f->name, "--help", NULL);
	assert_contains(r.out, "5  set/del --if-rev");
	run_free(&r);
}

/* watch --filter delete gets the delete and not the put before it. */
static void
test_watch_filter_delete_skips_puts(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "fk", "v1", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	struct proc p;
	ctl_start(&p, f->name, "watch", "fk", "--filter", "delete", "--no-old", "--count", "1",
	          "--json", NULL);
	wait_observers(f->name, 1);
	ctl(&r, f->name, "set", "fk", "v2", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "del", "fk", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	finish(&p, &r, hl_t_ms(20000));
	assert_exit(&r, 0);
	assert_contains(r.out, "\"type\":\"delete\"");
	assert_contains(r.out, "\"old_value\":null");
	assert_true(strstr(r.out, "\"put\"") == NULL);
	run_free(&r);
}

/* watch --prefix names each event's key and gets keys created after it
 * started, none outside the prefix; get --prefix lists the matching keys
 * with their values and revisions. */
static void
test_watch_and_get_prefix_cover_the_keys_under_it(void **state)
{
	struct fx *f = *state;
	struct proc p;
	ctl_start(&p, f->name, "watch", "--prefix", "s/42/", "--count", "2", "--timeout", "20000",
	          NULL);
	wait_observers(f->name, 1);
	/* The watch's observer is marked as a prefix observer, and the
	 * prefix is counted apart from the keys. */
	struct run q;
	ctl(&q, f->name, "--json", "observers", NULL);
	assert_exit(&q, 0);
	assert_int_equal(json_check(q.out, 0,
	                            "len(d) == 1 and d[0]['key'] == 's/42/' and "
	                            "d[0]['prefix'] is True and d[0]['filter'] == 'all'"),
	                 0);
	run_free(&q);
	ctl(&q, f->name, "observers", NULL);
	assert_exit(&q, 0);
	assert_contains(q.out, "key=s/42/ prefix=yes");
	run_free(&q);
	ctl(&q, f->name, "--json", "status", NULL);
	assert_exit(&q, 0);
	assert_int_equal(
	        json_check(q.out, 0, "d['in_use']['prefixes'] == 1 and d['in_use']['keys'] == 0"),
	        0);
	run_free(&q);
	ctl(&q, f->name, "status", NULL);
	assert_exit(&q, 0);
	assert_contains(q.out, "prefixes: 1");
	run_free(&q);
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(c, "s/43/x", 6, "no", 2, NULL, 0), 0);
	assert_int_equal(hl_publish(c, "s/42/a", 6, "one", 3, NULL, 0), 0);
	assert_int_equal(hl_publish(c, "s/42/b", 6, "two 2", 5, NULL, 0), 0);
	struct run r;
	finish(&p, &r, hl_t_ms(20000));
	hl_close(c);
	assert_exit(&r, 0);
	char want[256];
	snprintf(want, sizeof(want), "s/42/a put 2 %d one\ns/42/b put 3 %d two 2\n", (int)getpid(),
	         (int)getpid());
	assert_string_equal(r.out, want);
	run_free(&r);
	ctl(&r, f->name, "get", "--prefix", "s/42/", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "s/42/a 2 one\ns/42/b 3 two 2\n");
	run_free(&r);
	ctl(&r, f->name, "--json", "get", "--prefix", "s/", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0,
	                            "len(d) == 3 and d[0]['key'] == 's/42/a' and "
	                            "d[0]['value'] == 'one' and d[0]['revision'] == 2 and "
	                            "d[2]['key'] == 's/43/x' and d[2]['length'] == 2"),
	                 0);
	run_free(&r);
	/* Nothing under it: an empty answer, exit 0. KEY and --prefix
	 * together, or neither: usage (exit 2). */
	ctl(&r, f->name, "--json", "get", "--prefix", "t/", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0, "d == []"), 0);
	run_free(&r);
	ctl(&r, f->name, "get", "k", "--prefix", "s/", NULL);
	assert_exit(&r, 2);
	run_free(&r);
	ctl(&r, f->name, "watch", "--count", "1", NULL);
	assert_exit(&r, 2);
	run_free(&r);
}

/* watch KEY --rev R and watch --prefix P --rev R print every change after
 * R from the history, then live ones; past the history: exit 8 with the
 * oldest revision to resume from (stdout, or the --json error object). */
static void
test_watch_rev_resumes_and_compacted_exits_8(void **state)
{
	struct fx *f = *state;
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	uint64_t rev[4];
	const char *vals[] = { "a", "b", "c" };
	for (int i = 0; i < 3; i++) {
		assert_int_equal(hl_publish(c, "w/k", 3, vals[i], 1, NULL, 0), 0);
		assert_int_equal(hl_get(c, "w/k", 3, NULL, 0, NULL, &rev[i]), 0);
	}
	char from[32], want[256];
	snprintf(from, sizeof(from), "%llu", (unsigned long long)rev[0]);
	struct run r;
	ctl(&r, f->name, "watch", "w/k", "--rev", from, "--count", "2", "--timeout", "20000", NULL);
	assert_exit(&r, 0);
	snprintf(want, sizeof(want), "put %llu %d b\nput %llu %d c\n", (unsigned long long)rev[1],
	         (int)getpid(), (unsigned long long)rev[2], (int)getpid());
	assert_string_equal(r.out, want);
	run_free(&r);
	ctl(&r, f->name, "--json", "watch", "--prefix", "w/", "--rev", from, "--count", "2",
	    "--timeout", "20000", NULL);
	assert_exit(&r, 0);
	char expr[256];
	snprintf(expr, sizeof(expr),
	         "len(d) == 2 and d[0]['key'] == 'w/k' and d[0]['revision'] == %llu and "
	         "d[1]['value'] == 'c'",
	         (unsigned long long)rev[1]);
	assert_int_equal(json_check(r.out, 1, expr), 0);
	run_free(&r);
	/* Overrun the history (16 KiB a shard) with 40 values of 1000 bytes. */
	char big[1000];
	memset(big, 'x', sizeof(big));
	for (int i = 0; i < 40; i++) {
		big[0] = (char)('a' + i % 26);
		assert_int_equal(hl_publish(c, "w/k", 3, big, sizeof(big), NULL, 0), 0);
	}
	ctl(&r, f->name, "watch", "w/k", "--rev", from, "--count", "1", "--timeout", "5000", NULL);
	assert_exit(&r, 8);
	assert_contains(r.err, "compacted");
	unsigned long long oldest = strtoull(r.out, NULL, 10);
	assert_true(oldest > rev[0]);
	run_free(&r);
	ctl(&r, f->name, "--json", "watch", "--prefix", "w/", "--rev", from, "--count", "1",
	    "--timeout", "5000", NULL);
	assert_exit(&r, 8);
	assert_int_equal(json_check(r.out, 0,
	                            "d['error'] == 'HL_ECOMPACTED' and d['exit_code'] == 8 and "
	                            "d['oldest_revision'] > 0"),
	                 0);
	run_free(&r);
	/* From the oldest it gives: accepted. */
	char oldest_s[32];
	snprintf(oldest_s, sizeof(oldest_s), "%llu", oldest);
	ctl(&r, f->name, "watch", "w/k", "--rev", oldest_s, "--count", "1", "--timeout", "20000",
	    NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "watch", "w/k", "--rev", "x", NULL);
	assert_exit(&r, 2);
	run_free(&r);
	/* status shows the history. */
	ctl(&r, f->name, "--json", "status", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0,
	                            "d['history']['bytes_per_shard'] == 16384 and "
	                            "d['history']['oldest_resumable_revision'] > 0 and "
	                            "d['capacities']['history_bytes'] == 16384"),
	                 0);
	run_free(&r);
	hl_close(c);
}

static void
test_set_reports_errors_with_exit_4(void **state)
{
	struct fx *f = *state;
	struct run r;
	char *big = malloc(5000);
	assert_non_null(big);
	memset(big, 'x', 4999);
	big[4999] = '\0';
	ctl(&r, f->name, "set", "big", big, NULL);
	free(big);
	assert_exit(&r, 4);
	assert_contains(r.err, "larger than the segment's limit of 4096 bytes");
	run_free(&r);

	/* With no worker: a clear refusal, and nothing queued behind it. */
	stop_worker(f);
	ctl(&r, f->name, "set", "k", "v", "--timeout", "200", NULL);
	assert_exit(&r, 4);
	assert_contains(r.err, "no worker is serving");
	run_free(&r);
	f->worker = hl_t_worker_startv(f->name, hl_t_small);
	ctl(&r, f->name, "get", "k", NULL);
	assert_exit(&r, 1);
	run_free(&r);
}

/* set KEY -: the value is stdin, every byte of it (NUL included), and JSON
 * gives it back under the binary-safe rule: valid UTF-8 as is, each other
 * byte as U+FFFD with the exact bytes in value_hex, and no control
 * character raw in the output (C0, DEL and C1 escaped). */
static void
test_set_from_stdin_is_binary_safe(void **state)
{
	struct fx *f = *state;
	struct run r;
	unsigned char all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	ctl_in(&r, all, sizeof(all), f->name, "set", "all", "-", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "get", "all", NULL);
	assert_exit(&r, 0);
	assert_int_equal(r.out_len, sizeof(all));
	assert_memory_equal(r.out, all, sizeof(all));
	run_free(&r);
	/* 0x00-0x7f are one character each; 0x80-0xff, each alone, are not
	 * UTF-8. */
	ctl(&r, f->name, "--json", "get", "all", NULL);
	assert_exit(&r, 0);
	assert_int_equal(
	        json_check(r.out, 0,
	                   "d['value'] == ''.join(map(chr, range(128))) + '\\ufffd' * 128 and "
	                   "d['value_hex'] == bytes(range(256)).hex() and d['length'] == 256 and "
	                   "not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f "
	                   "for ch in raw[:-1]) and raw.endswith('}\\n')"),
	        0);
	run_free(&r);

	/* Valid UTF-8: C1 controls (U+0085, U+009F), U+00A0, e-acute, U+FFFD
	 * itself: read back as they are, escaped where they are controls, and
	 * no value_hex (nothing was replaced). */
	static const char utf8[] = "\xc2\x85\xc2\x9f\xc2\xa0\xc3\xa9\xef\xbf\xbd\x7f";
	ctl_in(&r, utf8, sizeof(utf8) - 1, f->name, "set", "utf8", "-", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "--json", "get", "utf8", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0,
	                            "d['value'] == '\\x85\\x9f\\xa0\\xe9\\ufffd\\x7f' and "
	                            "'value_hex' not in d and '\\\\u0085' in raw and "
	                            "'\\\\u007f' in raw and '\\xe9' in raw"),
	                 0);
	run_free(&r);

	/* An empty stdin is the empty value. */
	ctl_in(&r, "", 0, f->name, "set", "empty", "-", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "--json", "get", "empty", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0, "d['value'] == '' and d['length'] == 0"), 0);
	run_free(&r);
}

/* The limit is checked on what stdin holds: the largest value passes,
 * one byte more is refused before anything is sent. */
static void
test_set_from_stdin_checks_the_value_limit(void **state)
{
	struct fx *f = *state;
	struct run r;
	char *big = malloc(4097);
	assert_non_null(big);
	memset(big, 'y', 4097);
	big[0] = '\0';
	ctl_in(&r, big, 4096, f->name, "set", "max", "-", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "get", "max", NULL);
	assert_exit(&r, 0);
	assert_int_equal(r.out_len, 4096);
	assert_memory_equal(r.out, big, 4096);
	run_free(&r);

	uint64_t before = claims_made(f->name);
	ctl_in(&r, big, 4097, f->name, "set", "max", "-", NULL);
	free(big);
	assert_exit(&r, 4);
	assert_contains(r.err, "the value on stdin is larger than the segment's limit of 4096 "
	                       "bytes; nothing was sent");
	run_free(&r);
	/* Refused before an endpoint was claimed; the old value stays. */
	assert_int_equal(claims_made(f->name), before);
	ctl(&r, f->name, "get", "max", NULL);
	assert_int_equal(r.out_len, 4096);
	run_free(&r);
	ctl_in(&r, "v", 1, f->name, "--json", "set", "max", "-", "--meta", "m", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "get", "max", NULL);
	assert_string_equal(r.out, "v");
	run_free(&r);
}

/* As nobody, on a segment of root's (the trusted owner) with mode 0660:
 * not in its group, nothing; in its group with mode 0640, read but not
 * write. Each refusal names the path, mode, owner, group and the option
 * that fixes it. */
static void
test_permission_denied_names_path_mode_owner_and_option(void **state)
{
	struct fx *f = *state;
	if (geteuid() != 0) {
		print_message("not root: cannot switch to a second uid, skipping\n");
		return;
	}
	char path[128], want[192];
	struct run r;
	shm_path(f, path, sizeof(path));
	snprintf(want, sizeof(want), "permission denied: %s (mode 0660, owner root, group root)",
	         path);
	as_nobody = 1;
	as_group = (gid_t)-1;
	ctl(&r, f->name, "status", NULL);
	assert_exit(&r, 3);
	assert_contains(r.err, want);
	assert_contains(r.err, "needs read access");
	assert_contains(r.err, "neither its owner nor in its group root");
	assert_contains(r.err, "--group GROUP");
	run_free(&r);
	ctl(&r, f->name, "--json", "keys", NULL);
	assert_exit(&r, 3);
	assert_int_equal(json_check(r.out, 0,
	                            "d['error'] == 'EACCES' and d['exit_code'] == 3 and "
	                            "'mode 0660' in d['message']"),
	                 0);
	run_free(&r);

	/* In the group, which may only read: reading works, set is refused
	 * for want of write access. */
	assert_int_equal(chmod(path, 0640), 0);
	as_group = 0;
	ctl(&r, f->name, "keys", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "set", "k", "v", NULL);
	as_nobody = 0;
	assert_exit(&r, 3);
	snprintf(want, sizeof(want), "permission denied: %s (mode 0640, owner root, group root)",
	         path);
	assert_contains(r.err, want);
	assert_contains(r.err, "needs read and write access");
	assert_contains(r.err, "in its group root, and mode 0640 does not give the group that");
	assert_contains(r.err, "--mode");
	run_free(&r);
}

/* Every command is in --help, and has a --help of its own. */
static void
test_help_lists_every_command(void **state)
{
	(void)state;
	static const char *const names[] = { "status",    "stats",     "keys", "inspect", "get",
		                             "observers", "endpoints", "top",  "segment", "size",
		                             "set",       "del",       "watch" };
	const char *help[] = { HL_CTL_PATH, "--help", NULL };
	struct run r;
	runv(&r, help, NULL, 0);
	assert_exit(&r, 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char want[32];
		snprintf(want, sizeof(want), "\n  %s ", names[i]);
		assert_contains(r.out, want);
		struct run h;
		const char *cmd_help[] = { HL_CTL_PATH, names[i], "--help", NULL };
		runv(&h, cmd_help, NULL, 0);
		assert_exit(&h, 0);
		assert_contains(h.out, "Usage: heirloomctl");
		run_free(&h);
	}
	run_free(&r);
}

/* ---- watch ---- */

static void
test_watch_count_prints_one_line_per_event(void **state)
{
	struct fx *f = *state;
	struct proc p;
	ctl_start(&p, f->name, "watch", "w", "--count", "3", "--timeout", "20000", NULL);
	wait_observers(f->name, 1);
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(c, "w", 1, "one", 3, NULL, 0), 0);
	assert_int_equal(hl_publish(c, "w", 1, "two", 3, NULL, 0), 0);
	assert_int_equal(hl_publish(c, "w", 1, "three 3", 7, NULL, 0), 0);
	struct run r;
	finish(&p, &r, hl_t_ms(20000));
	hl_close(c);
	assert_exit(&r, 0);
	char want[256];
	snprintf(want, sizeof(want), "put 1 %d one\nput 2 %d two\nput 3 %d three 3\n",
	         (int)getpid(), (int)getpid(), (int)getpid());
	assert_string_equal(r.out, want);
	run_free(&r);
}

/* --progress-ms: an idle watch prints 'progress' lines (text and JSON);
 * a value below the minimum is a usage error. */
static void
test_watch_progress_ms_prints_progress_lines(void **state)
{
	struct fx *f = *state;
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(c, "pw", 2, "v", 1, NULL, 0), 0);
	hl_close(c);
	struct run r;
	ctl(&r, f->name, "watch", "pw", "--progress-ms", "20", "--count", "2", "--timeout", "20000",
	    NULL);
	assert_exit(&r, 0);
	unsigned long long r1 = 0, r2 = 0;
	assert_int_equal(sscanf(r.out, "progress %llu 0\nprogress %llu 0\n", &r1, &r2), 2);
	assert_true(r2 >= r1);
	run_free(&r);
	ctl(&r, f->name, "--json", "watch", "--prefix", "p", "--progress-ms", "20", "--count", "1",
	    "--timeout", "20000", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 1,
	                            "len(d) == 1 and d[0]['type'] == 'progress' and "
	                            "d[0]['key'] == 'p' and d[0]['value'] is None"),
	                 0);
	run_free(&r);
	ctl(&r, f->name, "watch", "pw", "--progress-ms", "5", "--count", "1", NULL);
	assert_exit(&r, 2);
	run_free(&r);
}

static void
test_top_reports_the_busy_key_and_rates(void **state)
{
	struct fx *f = *state;
	struct proc p;
	/* Publishing goes on while top samples twice. */
	ctl_start(&p, f->name, "--json", "top", "--interval", "300", "--count", "2", NULL);
	struct hl_client *c = hl_t_open(f->name, 0);
	for (int i = 0; i < 400; i++) {
		char v[16];
		int n = snprintf(v, sizeof(v), "v%d", i);
		assert_int_equal(hl_publish(c, "busy", 4, v, (size_t)n, NULL, 0), 0);
		usleep(1000);
	}
	struct run r;
	finish(&p, &r, hl_t_ms(20000));
	hl_close(c);
	assert_exit(&r, 0);
	/* Two frames, one JSON object per line, the busy key among the top. */
	int lines = 0;
	for (const char *q = r.out; *q; q++)
		lines += *q == '\n';
	assert_int_equal(lines, 2);
	assert_non_null(strstr(r.out, "\"key\":\"busy\""));
	assert_non_null(strstr(r.out, "\"publishes_per_s\":"));
	run_free(&r);
}

static void
test_watch_json_prints_one_object_per_line(void **state)
{
	struct fx *f = *state;
	struct proc p;
	ctl_start(&p, f->name, "--json", "watch", "w", "--count", "2", NULL);
	wait_observers(f->name, 1);
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(c, "w", 1, "a\x01\xff", 3, "meta", 4), 0);
	assert_int_equal(hl_delete(c, "w", 1), 0);
	struct run r;
	finish(&p, &r, hl_t_ms(20000));
	hl_close(c);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 1,
	                            "len(d) == 2 and d[0]['type'] == 'put' and "
	                            "d[0]['value'] == 'a\\u0001\\ufffd' and "
	                            "d[0]['value_hex'] == '6101ff' and d[0]['meta'] == 'meta' and "
	                            "d[0]['key'] == 'w' and d[1]['type'] == 'delete' and "
	                            "d[1]['revision'] > d[0]['revision']"),
	                 0);
	run_free(&r);
}

/* Read one line from FD (the watch's stdout) within the test timeout. */
static void
read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;
	uint64_t deadline = hl_t_now_ms() + (uint64_t)hl_t_ms(20000);
	while (n + 1 < len && hl_t_now_ms() < deadline) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		if (poll(&pf, 1, 50) <= 0)
			continue;
		if (read(fd, buf + n, 1) != 1)
			break;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
}

/* watch KEY | head -1: the reader goes, and the next event's write
 * fails (EPIPE). That is the end of the watch, not an error: exit 0,
 * nothing on stderr. */
static void
test_watch_exits_0_when_its_pipe_closes_on_a_write(void **state)
{
	struct fx *f = *state;
	struct proc p;
	ctl_start(&p, f->name, "watch", "hp", NULL);
	wait_observers(f->name, 1);
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(c, "hp", 2, "one", 3, NULL, 0), 0);
	char line[128];
	read_line(p.out_fd, line, sizeof(line));
	assert_true(strncmp(line, "put 1 ", 6) == 0);
	close(p.out_fd);
	p.out_fd = -1;
	/* The watch is waiting in hl_next(): this event wakes it into a
	 * write to the closed pipe. */
	assert_int_equal(hl_publish(c, "hp", 2, "two", 3, NULL, 0), 0);
	struct run r;
	finish(&p, &r, hl_t_ms(20000));
	hl_close(c);
	assert_exit(&r, 0);
	assert_int_equal(r.err_len, 0);
	run_free(&r);
}

/* ... and with no event after the reader went, it still ends (it looks
 * at its output while it waits), also with --json. */
static void
test_watch_exits_0_when_its_pipe_closes_while_idle(void **state)
{
	struct fx *f = *state;
	struct proc p;
	ctl_start(&p, f->name, "--json", "watch", "hq", NULL);
	wait_observers(f->name, 1);
	close(p.out_fd);
	p.out_fd = -1;
	struct run r;
	finish(&p, &r, hl_t_ms(20000));
	assert_exit(&r, 0);
	assert_int_equal(r.err_len, 0);
	run_free(&r);
}

static void
test_watch_times_out_short_of_count_with_exit_4(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "watch", "quiet", "--count", "1", "--timeout", "300", NULL);
	assert_exit(&r, 4);
	assert_contains(r.err, "timed out after 0 of 1 events");
	run_free(&r);
}

/* ---- JSON and introspection ---- */

static void
test_json_outputs_parse(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "bin\xff\x01", "v", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	ctl(&r, f->name, "set", "plain", "v", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	struct hl_client *c = hl_t_open(f->name, 0);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "plain", 5, 0, &id), 0);

	static const char *const cmds[][3] = {
		{ "status", NULL },     { "stats", NULL },        { "keys", NULL },
		{ "inspect", "plain" }, { "get", "plain" },       { "observers", NULL },
		{ "endpoints", NULL },  { "segment", "inspect" },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		ctl(&r, f->name, "--json", cmds[i][0], cmds[i][1], NULL);
		assert_exit(&r, 0);
		assert_int_equal(json_check(r.out, 0, "d is not None"), 0);
		run_free(&r);
	}
	ctl(&r, f->name, "--json", "keys", NULL);
	assert_int_equal(json_check(r.out, 0,
	                            "sorted(k.get('key_hex', '') for k in d) == ['', "
	                            "'62696eff01'] and d[1]['key'] == 'plain'"),
	                 0);
	run_free(&r);

	char expr[512];
	snprintf(expr, sizeof(expr),
	         "d['observer_count'] == 1 and d['observers'][0]['id'] == %llu and "
	         "d['observers'][0]['pid'] == %d and d['observers'][0]['alive'] is True",
	         (unsigned long long)id, (int)getpid());
	ctl(&r, f->name, "--json", "inspect", "plain", NULL);
	assert_int_equal(json_check(r.out, 0, expr), 0);
	run_free(&r);

	char pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	snprintf(expr, sizeof(expr),
	         "len(d) == 1 and d[0]['id'] == %llu and d[0]['key'] == 'plain'",
	         (unsigned long long)id);
	ctl(&r, f->name, "--json", "observers", "--pid", pid, NULL);
	assert_int_equal(json_check(r.out, 0, expr), 0);
	run_free(&r);

	snprintf(expr, sizeof(expr),
	         "[e['state'] for e in d if e['pid'] == %d] == ['active'] and "
	         "[e['observers'] for e in d if e['pid'] == %d] == [1]",
	         (int)getpid(), (int)getpid());
	ctl(&r, f->name, "--json", "endpoints", NULL);
	assert_int_equal(json_check(r.out, 0, expr), 0);
	run_free(&r);
	hl_close(c);
}

static void
test_read_only_commands_claim_no_endpoint(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "k", "v", NULL);
	run_free(&r);
	uint64_t before = claims_made(f->name);
	static const char *const cmds[][2] = {
		{ "status", NULL }, { "stats", NULL },     { "keys", NULL },      { "get", "k" },
		{ "inspect", "k" }, { "observers", NULL }, { "endpoints", NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		ctl(&r, f->name, cmds[i][0], cmds[i][1], NULL);
		assert_exit(&r, 0);
		run_free(&r);
	}
	assert_int_equal(claims_made(f->name), before);
	/* ... while a command that needs the worker does claim one. */
	ctl(&r, f->name, "set", "k", "w", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	assert_int_equal(claims_made(f->name), before + 1);
}

/* ---- Prometheus ---- */

/* promtool (Debian's prometheus package) when there is one: $HL_PROMTOOL,
 * else promtool in PATH; NULL when neither (then only prom_check.py
 * checks, and the test says so). */
static const char *
promtool(void)
{
	const char *p = getenv("HL_PROMTOOL");
	if (p && *p)
		return p;
	static const char *const dirs[] = { "/usr/bin/promtool", "/usr/local/bin/promtool" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (access(dirs[i], X_OK) == 0)
			return dirs[i];
	return NULL;
}

/* TEXT must be a valid exposition for prom_check.py (our strict parser
 * and prometheus_client's, with the extra ARGS, NULL-terminated) and for
 * `promtool check metrics`; then the Python expression EXPR must hold,
 * with val(NAME, **labels) the value of the one sample that matches and
 * count(NAME) the number of samples of that name, as prometheus_client
 * read them. */
static void
prom_assert(const char *text, const char *expr, ...)
{
	const char *argv[40] = { python(), PROM_CHECK };
	int n = 2;
	va_list ap;
	va_start(ap, expr);
	const char *x;
	while ((x = va_arg(ap, const char *)) != NULL && n < 38)
		argv[n++] = x;
	va_end(ap);
	argv[n] = NULL;
	struct run chk;
	runv(&chk, argv, text, strlen(text));
	if (chk.status != 0)
		fail_msg("prom_check exit %d: %s%s\non:\n%s", chk.status, chk.out, chk.err, text);
	assert_contains(chk.out, "ok:");
	run_free(&chk);

	const char *pt = promtool();
	if (pt) {
		const char *pargv[] = { pt, "check", "metrics", NULL };
		runv(&chk, pargv, text, strlen(text));
		if (chk.status != 0)
			fail_msg("promtool check metrics exit %d: %s%s\non:\n%s", chk.status,
			         chk.out, chk.err, text);
		run_free(&chk);
	} else {
		print_message("promtool not found (Debian package prometheus; or set "
		              "HL_PROMTOOL): checked by prom_check.py only\n");
	}

	char prog[4096];
	snprintf(prog, sizeof(prog),
	         "import sys\n"
	         "from prometheus_client.parser import text_string_to_metric_families\n"
	         "S = [(s.name, s.labels, s.value) for f in "
	         "text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n"
	         "def val(name, **l):\n"
	         "    m = [v for n, lb, v in S if n == name and lb == l]\n"
	         "    assert len(m) == 1, (name, l, m)\n"
	         "    return m[0]\n"
	         "def count(name):\n"
	         "    return len([1 for n, _, _ in S if n == name])\n"
	         "assert (%s)\n",
	         expr);
	const char *pyargv[] = { python(), "-c", prog, NULL };
	runv(&chk, pyargv, text, strlen(text));
	if (chk.status != 0)
		fail_msg("'%s' does not hold: %s\non:\n%s", expr, chk.err, text);
	run_free(&chk);
}

/* Wait until the worker counted N dispatches in the latency histogram
 * (a set returns once its publish is applied, a moment before its
 * dispatch is counted). */
static void
wait_dispatches(const char *name, uint64_t n)
{
	struct hl_client *c = hl_t_open(name, 0);
	uint64_t deadline = hl_t_now_ms() + (uint64_t)hl_t_ms(10000), got;
	do {
		struct hl_stats st;
		assert_int_equal(hl_stats(c, &st), 0);
		got = 0;
		for (int i = 0; i < 16; i++)
			got += st.dispatch_hist[i];
		if (got >= n)
			break;
		usleep(10000);
	} while (hl_t_now_ms() < deadline);
	hl_close(c);
	if (got < n)
		fail_msg("%llu dispatches counted, expected %llu", (unsigned long long)got,
		         (unsigned long long)n);
}

static void
test_stats_prometheus_parses(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "p", "1", NULL);
	run_free(&r);
	ctl(&r, f->name, "set", "p", "2", NULL);
	run_free(&r);
	wait_dispatches(f->name, 2);
	ctl(&r, f->name, "stats", "--prometheus", NULL);
	assert_exit(&r, 0);
	char want[128];
	snprintf(want, sizeof(want), "heirloom_publishes_total{segment=\"%s\"} 2\n", f->name);
	assert_contains(r.out, want);
	char label[96], expr[1024];
	snprintf(label, sizeof(label), "segment=%s", f->name);
	/* A real histogram: 2 dispatches, the sum of their latencies kept by
	 * the worker (more than nothing, less than a second here). */
	snprintf(expr, sizeof(expr),
	         "val('heirloom_dispatch_latency_seconds_count', segment='%s') == 2 and "
	         "val('heirloom_dispatch_latency_seconds_bucket', segment='%s', le='+Inf') == 2 "
	         "and 0 < val('heirloom_dispatch_latency_seconds_sum', segment='%s') < 1 and "
	         "count('heirloom_dispatch_latency_seconds_bucket') == 16 and "
	         "val('heirloom_build_info', version='%d.%d.%d', layout_version='%u') == 1 and "
	         "val('heirloom_up', segment='%s') == 1",
	         f->name, f->name, f->name, HL_VERSION_MAJOR, HL_VERSION_MINOR, HL_VERSION_PATCH,
	         HL_LAYOUT_VERSION, f->name);
	prom_assert(r.out, expr, "--label", label, "--label-exempt", "heirloom_build_info",
	            "--expect", "heirloom_publishes_total", "--expect",
	            "heirloom_dispatch_latency_seconds", "--expect", "heirloom_keys_capacity",
	            "--expect", "heirloom_build_info", NULL);
	run_free(&r);
}

/* The sum the segment keeps is the sum of what the buckets counted: at
 * least each bucket's lower bound times its count, below the upper
 * bounds' (the last bucket has none). */
static void
test_stats_latency_sum_matches_its_buckets(void **state)
{
	struct fx *f = *state;
	struct run r;
	for (int i = 0; i < 5; i++) {
		char v[8];
		snprintf(v, sizeof(v), "%d", i);
		ctl(&r, f->name, "set", "lat", v, NULL);
		assert_exit(&r, 0);
		run_free(&r);
	}
	wait_dispatches(f->name, 5);
	ctl(&r, f->name, "--json", "stats", NULL);
	assert_exit(&r, 0);
	assert_int_equal(json_check(r.out, 0,
	                            "[L := d['dispatch_latency'], b := L['buckets'], "
	                            "lo := sum(x['count'] * x['from_ns'] for x in b), "
	                            "hi := sum(x['count'] * x['below_ns'] for x in b[:-1])] and "
	                            "L['count'] == 5 and L['sum_ns'] >= lo and L['sum_ns'] > 0 and "
	                            "(b[-1]['count'] > 0 or L['sum_ns'] < hi)"),
	                 0);
	run_free(&r);
	ctl(&r, f->name, "stats", NULL);
	assert_contains(r.out, "\n  sum: ");
	run_free(&r);
}

/* Several segments, one exposition: HELP and TYPE once per family, each
 * sample labelled with its segment; two single-segment outputs put end
 * to end are not valid (the checkers can tell). */
static void
test_metrics_of_several_segments_make_one_exposition(void **state)
{
	struct fx *f = *state;
	char other[80];
	snprintf(other, sizeof(other), "%s_b", f->name);
	pid_t w2 = hl_t_worker_startv(other, hl_t_small);
	struct run r, a, b;
	ctl(&r, f->name, "set", "k", "1", NULL);
	assert_exit(&r, 0);
	run_free(&r);

	const char *argv[] = { HL_CTL_PATH, "--name", f->name, "--name", other, "metrics", NULL };
	runv(&r, argv, NULL, 0);
	assert_exit(&r, 0);
	char expr[1024];
	snprintf(expr, sizeof(expr),
	         "val('heirloom_publishes_total', segment='%s') == 1 and "
	         "val('heirloom_publishes_total', segment='%s') == 0 and "
	         "count('heirloom_up') == 2 and count('heirloom_keys_capacity') == 2 and "
	         "count('heirloom_dispatch_latency_seconds_bucket') == 32 and "
	         "count('heirloom_build_info') == 1",
	         f->name, other);
	prom_assert(r.out, expr, NULL);
	/* stats --prometheus takes several names too. */
	const char *sargv[] = { HL_CTL_PATH, "--name", f->name,        "stats",
		                "--name",    other,    "--prometheus", NULL };
	runv(&a, sargv, NULL, 0);
	assert_exit(&a, 0);
	prom_assert(a.out, expr, NULL);
	run_free(&a);
	run_free(&r);

	/* What the issue saw: one output per segment, concatenated. */
	ctl(&a, f->name, "stats", "--prometheus", NULL);
	ctl(&b, other, "stats", "--prometheus", NULL);
	append(&a.out, &a.out_len, b.out, b.out_len);
	const char *chk[] = { python(), PROM_CHECK, NULL };
	runv(&r, chk, a.out, a.out_len);
	assert_exit(&r, 1);
	assert_contains(r.err, "second HELP");
	run_free(&r);
	const char *pt = promtool();
	if (pt) {
		const char *pargv[] = { pt, "check", "metrics", NULL };
		runv(&r, pargv, a.out, a.out_len);
		assert_true(r.status != 0);
		run_free(&r);
	}
	run_free(&a);
	run_free(&b);

	/* A missing segment on stdout: exit 3, named, nothing written. */
	const char *margv[] = { HL_CTL_PATH,     "--name",  f->name, "--name",
		                "no-such-seg-x", "metrics", NULL };
	runv(&r, margv, NULL, 0);
	assert_exit(&r, 3);
	assert_int_equal(r.out_len, 0);
	assert_contains(r.err, "no segment 'no-such-seg-x'");
	run_free(&r);
	/* Other commands read one segment. */
	const char *uargv[] = { HL_CTL_PATH, "--name", f->name, "--name", other, "status", NULL };
	runv(&r, uargv, NULL, 0);
	assert_exit(&r, 2);
	assert_contains(r.err, "only 'metrics' and 'stats --prometheus'");
	run_free(&r);

	hl_t_worker_stop(w2);
	hl_t_unlink(other);
}

/* One HTTP/1.0 request to 127.0.0.1:PORT; the whole response in R->out. */
static void
http(struct run *r, unsigned port, const char *method, const char *path)
{
	memset(r, 0, sizeof(*r));
	append(&r->out, &r->out_len, "", 0);
	append(&r->err, &r->err_len, "", 0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	char req[256];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method,
	                 path);
	assert_int_equal(write(fd, req, (size_t)n), n);
	char buf[4096];
	ssize_t k;
	while ((k = read(fd, buf, sizeof(buf))) > 0)
		append(&r->out, &r->out_len, buf, (size_t)k);
	close(fd);
}

/* metrics --listen PORT: loopback, an exposition per scrape, a segment
 * that cannot be read as heirloom_up 0 (and the server keeps serving),
 * 404 and 405 for the rest, exit 0 on SIGTERM. */
static void
test_metrics_listen_serves_scrapes(void **state)
{
	struct fx *f = *state;
	struct proc p;
	ctl_start(&p, f->name, "--name", "no-such-seg-y", "metrics", "--listen", "0", NULL);
	char line[256];
	read_line(p.out_fd, line, sizeof(line));
	unsigned port = 0;
	if (sscanf(line, "serving http://127.0.0.1:%u/metrics", &port) != 1 || !port)
		fail_msg("first line: '%s'", line);

	struct run r;
	ctl(&r, f->name, "set", "k", "v", NULL);
	run_free(&r);
	http(&r, port, "GET", "/metrics");
	assert_contains(r.out, " 200 OK\r\n");
	assert_contains(r.out, "text/plain; version=0.0.4");
	const char *body = strstr(r.out, "\r\n\r\n");
	assert_non_null(body);
	char expr[512];
	snprintf(expr, sizeof(expr),
	         "val('heirloom_up', segment='%s') == 1 and "
	         "val('heirloom_up', segment='no-such-seg-y') == 0 and "
	         "val('heirloom_publishes_total', segment='%s') == 1 and "
	         "count('heirloom_publishes_total') == 1",
	         f->name, f->name);
	prom_assert(body + 4, expr, NULL);
	run_free(&r);
	/* A fresh reading at each scrape. */
	ctl(&r, f->name, "set", "k", "w", NULL);
	run_free(&r);
	http(&r, port, "GET", "/metrics");
	snprintf(expr, sizeof(expr), "val('heirloom_publishes_total', segment='%s') == 2", f->name);
	prom_assert(strstr(r.out, "\r\n\r\n") + 4, expr, NULL);
	run_free(&r);
	http(&r, port, "GET", "/other");
	assert_contains(r.out, " 404 ");
	run_free(&r);
	http(&r, port, "DELETE", "/metrics");
	assert_contains(r.out, " 405 ");
	run_free(&r);

	kill(p.pid, SIGTERM);
	finish(&p, &r, hl_t_ms(20000));
	assert_exit(&r, 0);
	assert_contains(r.err, "segment 'no-such-seg-y' cannot be read");
	run_free(&r);
}

/* A port in use is a clear error, and a host-less address is refused
 * rather than taken for every interface. */
static void
test_metrics_listen_on_a_busy_port_fails_clearly(void **state)
{
	struct fx *f = *state;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	char addr[64], want[96];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
	struct run r;
	ctl(&r, f->name, "metrics", "--listen", addr, NULL);
	close(fd);
	assert_exit(&r, 4);
	snprintf(want, sizeof(want), "cannot listen on %s: ", addr);
	assert_contains(r.err, want);
	assert_contains(r.err, "another process listens there");
	run_free(&r);
	ctl(&r, f->name, "metrics", "--listen", ":9100", NULL);
	assert_exit(&r, 2);
	assert_contains(r.err, "give the host");
	run_free(&r);
}

/* The checker must be able to say no, or the test above proves nothing. */
static void
test_prom_check_rejects_invalid_exposition(void **state)
{
	(void)state;
	static const char *const bad[] = {
		/* a histogram without _sum */
		("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
		 "h_count 2\n"),
		/* an unterminated label value */
		"# HELP c_total x\n# TYPE c_total counter\nc_total{name=\"x} 1\n",
		/* a sample with no TYPE */
		"g 1\n",
		/* no final line feed */
		"# HELP g x\n# TYPE g gauge\ng 1",
	};
	const char *argv[] = { python(), PROM_CHECK, NULL };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct run r;
		runv(&r, argv, bad[i], strlen(bad[i]));
		if (r.status != 1)
			fail_msg("prom_check accepted (exit %d): %s", r.status, bad[i]);
		run_free(&r);
	}
	static const char good[] =
	        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
	        "h_sum 1.5\nh_count 2\n";
	struct run r;
	runv(&r, argv, good, strlen(good));
	assert_exit(&r, 0);
	run_free(&r);
}

/* ---- unusable segments ---- */

static void
test_missing_segment_exits_3(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "status", NULL);
	assert_exit(&r, 3);
	assert_contains(r.err, "heirloomctl: status: no segment");
	assert_contains(r.err, f->name);
	run_free(&r);
	ctl(&r, f->name, "--json", "get", "k", NULL);
	assert_exit(&r, 3);
	assert_int_equal(json_check(r.out, 0, "d['error'] == 'ENOENT' and d['exit_code'] == 3"), 0);
	run_free(&r);
}

/* Every command on one bad object: exit 3, the message, no crash. */
static void
expect_unusable(const struct fx *f, const char *message)
{
	static const char *const cmds[][3] = {
		{ "status", NULL },    { "stats", NULL },        { "keys", NULL },
		{ "get", "k" },        { "inspect", "k" },       { "observers", NULL },
		{ "endpoints", NULL }, { "set", "k", "v" },      { "del", "k" },
		{ "watch", "k" },      { "segment", "inspect" },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct run r;
		ctl(&r, f->name, cmds[i][0], cmds[i][1], cmds[i][2], NULL);
		assert_exit(&r, 3);
		assert_contains(r.err, message);
		run_free(&r);
	}
}

static void
test_wrong_magic_exits_3_and_never_crashes(void **state)
{
	struct fx *f = *state;
	char path[128];
	shm_path(f, path, sizeof(path));
	unsigned char junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 131u + 7u);
	write_file(path, junk, sizeof(junk));
	expect_unusable(f, "not a heirloom segment");

	struct run r;
	ctl(&r, f->name, "--json", "segment", "inspect", NULL);
	assert_exit(&r, 3);
	assert_int_equal(json_check(r.out, 0,
	                            "d['validation']['result'] == 'HL_EBADMAGIC' and "
	                            "d['validation']['usable'] is False and "
	                            "d['header']['magic_ok'] is False"),
	                 0);
	run_free(&r);

	/* An empty object (a crash before ftruncate) and a 3-byte one. */
	write_file(path, "", 0);
	expect_unusable(f, "not a heirloom segment");
	write_file(path, "HEI", 3);
	expect_unusable(f, "not a heirloom segment");
}

static void
test_truncated_and_other_version_exit_3(void **state)
{
	struct fx *f = *state;
	char path[128];
	shm_path(f, path, sizeof(path));
	/* Our magic and nothing else. */
	write_file(path, "HEIRLOOM", 8);
	expect_unusable(f, "truncated");
	/* A full header of layout version 99. */
	struct hl_shm_header *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	h->magic = HL_MAGIC;
	h->version = 99;
	h->header_size = sizeof(*h);
	write_file(path, h, sizeof(*h));
	free(h);
	expect_unusable(f, "another layout version");
	struct run r;
	ctl(&r, f->name, "--json", "segment", "inspect", NULL);
	assert_exit(&r, 3);
	char expr[256];
	snprintf(expr, sizeof(expr),
	         "d['validation']['result'] == 'HL_EVERSION' and "
	         "d['header']['layout_version'] == 99 and "
	         "d['header']['expected_layout_version'] == %u",
	         HL_LAYOUT_VERSION);
	assert_int_equal(json_check(r.out, 0, expr), 0);
	run_free(&r);
}

static void
test_segment_remove_refuses_without_force(void **state)
{
	struct fx *f = *state;
	char path[128];
	struct stat st;
	struct run r;
	shm_path(f, path, sizeof(path));

	ctl(&r, f->name, "segment", "remove", NULL);
	assert_exit(&r, 2);
	assert_contains(r.err, "without --force");
	run_free(&r);
	assert_int_equal(stat(path, &st), 0);

	/* A living worker is recorded: refused unless --force-live. */
	ctl(&r, f->name, "segment", "remove", "--force", NULL);
	assert_exit(&r, 4);
	assert_contains(r.err, "--force-live");
	run_free(&r);
	assert_int_equal(stat(path, &st), 0);

	stop_worker(f);
	ctl(&r, f->name, "segment", "remove", "--force", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	assert_int_equal(stat(path, &st), -1);

	/* A leftover that is not ours at all. */
	write_file(path, "garbage!", 8);
	ctl(&r, f->name, "segment", "remove", "--force", NULL);
	assert_exit(&r, 0);
	run_free(&r);
	assert_int_equal(stat(path, &st), -1);
	ctl(&r, f->name, "segment", "remove", "--force", NULL);
	assert_exit(&r, 3);
	run_free(&r);
}

/* ---- usage ---- */

static void
test_usage_errors_exit_2(void **state)
{
	struct fx *f = *state;
	struct run r;
	static const char *const bad[][4] = {
		{ "frobnicate", NULL },        { "get", NULL },
		{ "set", "k", NULL },          { "watch", "k", "--count", "zero" },
		{ "status", "--bogus" },       { "segment", "explode" },
		{ "keys", "extra" },           { "get", "--name" },
		{ "--name", "a/b", "status" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ctl(&r, f->name, bad[i][0], bad[i][1], bad[i][2], bad[i][3], NULL);
		assert_exit(&r, 2);
		assert_contains(r.err, "heirloomctl: ");
		run_free(&r);
	}
	const char *help[] = { HL_CTL_PATH, "--help", NULL };
	runv(&r, help, NULL, 0);
	assert_exit(&r, 0);
	assert_contains(r.out, "Exit status:");
	assert_contains(r.out, "3  the segment is missing or unusable");
	run_free(&r);
	const char *cmd_help[] = { HL_CTL_PATH, "watch", "--help", NULL };
	runv(&r, cmd_help, NULL, 0);
	assert_exit(&r, 0);
	assert_contains(r.out, "--count N");
	run_free(&r);
	const char *version[] = { HL_CTL_PATH, "--version", NULL };
	runv(&r, version, NULL, 0);
	assert_exit(&r, 0);
	assert_contains(r.out, "heirloomctl ");
	run_free(&r);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_status_shows_capacities_and_owner, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_status_works_with_no_worker, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_after_worker_crash_says_owner_dead,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_then_get_round_trips, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_of_missing_key_exits_1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_del_then_get_exits_1, setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_if_rev_conflict_exits_5_with_the_current_revision, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_and_get_prefix_cover_the_keys_under_it,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_filter_delete_skips_puts, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_set_reports_errors_with_exit_4, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_set_from_stdin_is_binary_safe, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_set_from_stdin_checks_the_value_limit, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(
		        test_permission_denied_names_path_mode_owner_and_option, setup, teardown),
		cmocka_unit_test(test_help_lists_every_command),
		cmocka_unit_test_setup_teardown(test_watch_rev_resumes_and_compacted_exits_8,
		                                setup_small_history, teardown),
		cmocka_unit_test_setup_teardown(test_watch_count_prints_one_line_per_event, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_watch_exits_0_when_its_pipe_closes_on_a_write,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_exits_0_when_its_pipe_closes_while_idle,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_json_prints_one_object_per_line, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_watch_progress_ms_prints_progress_lines, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_top_reports_the_busy_key_and_rates, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_watch_times_out_short_of_count_with_exit_4,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_outputs_parse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only_commands_claim_no_endpoint, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_stats_prometheus_parses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stats_latency_sum_matches_its_buckets, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(
		        test_metrics_of_several_segments_make_one_exposition, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics_listen_serves_scrapes, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_metrics_listen_on_a_busy_port_fails_clearly,
		                                setup, teardown),
		cmocka_unit_test(test_prom_check_rejects_invalid_exposition),
		cmocka_unit_test_setup_teardown(test_missing_segment_exits_3, setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_magic_exits_3_and_never_crashes,
		                                setup_bare, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_and_other_version_exit_3, setup_bare,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_segment_remove_refuses_without_force, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_usage_errors_exit_2, setup_bare, teardown),
	};
	return cmocka_run_group_tests_name("ctl", tests, NULL, NULL);
}
