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
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	int open_fds = 2;
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
 * R from the history, then live ones; past the history: exit 6 with the
 * oldest revision to resume from (stdout, or the --json error object). */
static void
test_watch_rev_resumes_and_compacted_exits_6(void **state)
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
	assert_exit(&r, 6);
	assert_contains(r.err, "compacted");
	unsigned long long oldest = strtoull(r.out, NULL, 10);
	assert_true(oldest > rev[0]);
	run_free(&r);
	ctl(&r, f->name, "--json", "watch", "--prefix", "w/", "--rev", from, "--count", "1",
	    "--timeout", "5000", NULL);
	assert_exit(&r, 6);
	assert_int_equal(json_check(r.out, 0,
	                            "d['error'] == 'HL_ECOMPACTED' and d['exit_code'] == 6 and "
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

static void
test_stats_prometheus_parses(void **state)
{
	struct fx *f = *state;
	struct run r;
	ctl(&r, f->name, "set", "p", "1", NULL);
	run_free(&r);
	ctl(&r, f->name, "set", "p", "2", NULL);
	run_free(&r);
	ctl(&r, f->name, "stats", "--prometheus", NULL);
	assert_exit(&r, 0);
	char want[128];
	snprintf(want, sizeof(want), "heirloom_publishes_total{name=\"%s\"} 2\n", f->name);
	assert_contains(r.out, want);
	char label[96];
	snprintf(label, sizeof(label), "name=%s", f->name);
	const char *argv[] = { python(),   PROM_CHECK,
		               "--label",  label,
		               "--expect", "heirloom_publishes_total",
		               "--expect", "heirloom_dispatch_latency_cumulative",
		               "--expect", "heirloom_keys_capacity",
		               NULL };
	struct run chk;
	runv(&chk, argv, r.out, r.out_len);
	if (chk.status != 0)
		fail_msg("prom_check exit %d: %s%s", chk.status, chk.out, chk.err);
	assert_contains(chk.out, "ok:");
	run_free(&chk);
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
		cmocka_unit_test_setup_teardown(test_watch_rev_resumes_and_compacted_exits_6,
		                                setup_small_history, teardown),
		cmocka_unit_test_setup_teardown(test_watch_count_prints_one_line_per_event, setup,
		                                teardown),
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
