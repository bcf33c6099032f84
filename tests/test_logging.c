/* SPDX-License-Identifier: MIT */
/*
 * test_logging.c: the daemons' log (daemon/common/log.c) as an operator
 * sees it, read from their stderr: --log-level filters, an error says so,
 * journald gets <N> priorities and no doubled name[pid] when
 * $JOURNAL_STREAM is the daemon's stderr (and only then), --log-format
 * syslog on request; and SIGHUP (issue 18): both daemons keep serving and
 * apply a new log level from the config file, a bad file changes nothing.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int
setup(void **state)
{
	return hl_t_kfx_setup(state, "log");
}

/* Whether PATH holds NEEDLE now (no waiting). */
static int
has_now(const char *path, const char *needle)
{
	return hl_t_file_has(path, needle, 0);
}

/* A standalone worker with EXTRA (NULL-terminated, after the small
 * capacities), stderr appended to LOG; waits until it serves. */
static pid_t
worker_logging(struct hl_t_kfx *f, const char *const *extra, const char *log)
{
	const char *argv[40];
	int n = 0;
	argv[n++] = HL_WORKER_PATH;
	argv[n++] = "--standalone";
	argv[n++] = "--name";
	argv[n++] = f->name;
	for (int i = 0; hl_t_small[i]; i++)
		argv[n++] = hl_t_small[i];
	for (int i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid = hl_t_kfx_track(f, hl_t_spawn(argv, log));
	assert_int_equal(hl_t_wait_ready(f->name, hl_t_ms(10000)), 0);
	return pid;
}

static void
stop(struct hl_t_kfx *f, pid_t pid)
{
	assert_int_equal(hl_t_worker_stop(pid), 0);
	hl_t_kfx_untrack(f, pid);
}

/* A worker that fails at once (an invalid ring size): its error lines. */
static void
worker_fails(struct hl_t_kfx *f, const char *const *extra, const char *log)
{
	const char *argv[16] = { HL_WORKER_PATH, "--standalone", "--name",
		                 f->name,        "--req-ring",   "3" };
	int n = 6;
	for (int i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid = hl_t_spawn(argv, log);
	assert_int_equal(hl_t_wait_exit(pid, hl_t_ms(10000)), 2);
}

static void
test_log_level_filters_and_errors_say_so(void **state)
{
	struct hl_t_kfx *f = *state;
	char debug_log[160], err_log[160], want[96];
	snprintf(debug_log, sizeof(debug_log), "%s/debug.log", f->dir);
	snprintf(err_log, sizeof(err_log), "%s/err.log", f->dir);

	/* warning: no info line (the worker always says it serves). */
	const char *const warning[] = { "--log-level", "warning", NULL };
	stop(f, worker_logging(f, warning, f->wlog));
	assert_false(has_now(f->wlog, "serving /heirloom."));
	assert_false(has_now(f->wlog, "debug: "));

	/* debug: the info lines and the debug ones, marked. */
	const char *const debug[] = { "--log-level=debug", NULL };
	pid_t w = worker_logging(f, debug, debug_log);
	struct hl_client *c = hl_t_open(f->name, 0);
	snprintf(want, sizeof(want), ": adopted client pid %d\n", (int)getpid());
	assert_true(hl_t_file_has(debug_log, want, hl_t_ms(5000)));
	assert_true(has_now(debug_log, "]: debug: endpoint "));
	hl_close(c);
	stop(f, w);
	assert_true(has_now(debug_log, "]: serving /heirloom."));
	assert_true(has_now(debug_log, "]: debug: configuration: "));

	/* The default (info) has no debug line; err keeps the errors. */
	stop(f, worker_logging(f, NULL, f->klog));
	assert_true(has_now(f->klog, "serving /heirloom."));
	assert_false(has_now(f->klog, "debug: "));
	const char *const err[] = { "--log-level", "err", NULL };
	worker_fails(f, err, err_log);
	assert_true(has_now(err_log, "heirloom-worker["));
	assert_true(has_now(err_log, "]: error: invalid capacities"));
}

/* Start the worker with $JOURNAL_STREAM = VALUE (NULL: the device and
 * inode of LOG, as systemd sets it for the service's stderr). */
static void
with_journal_stream(const char *log, const char *value)
{
	char v[64];
	if (!value) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		struct stat st;
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		close(fd);
		snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev,
		         (unsigned long long)st.st_ino);
		value = v;
	}
	setenv("JOURNAL_STREAM", value, 1);
}

static void
test_journald_gets_priorities_and_no_doubled_prefix(void **state)
{
	struct hl_t_kfx *f = *state;
	char err_log[160], other_log[160];
	snprintf(err_log, sizeof(err_log), "%s/err.log", f->dir);
	snprintf(other_log, sizeof(other_log), "%s/other.log", f->dir);

	with_journal_stream(f->wlog, NULL);
	pid_t w = worker_logging(f, NULL, f->wlog);
	with_journal_stream(err_log, NULL);
	worker_fails(f, NULL, err_log);
	/* Another stream's numbers (stderr redirected since): plain lines. */
	setenv("JOURNAL_STREAM", "1:1", 1);
	pid_t w2 = hl_t_kfx_track(
	        f, hl_t_spawn((const char *const[]){ HL_WORKER_PATH, "--help", NULL }, other_log));
	unsetenv("JOURNAL_STREAM");
	stop(f, w);
	assert_true(has_now(f->wlog, "<6>serving /heirloom."));
	assert_false(has_now(f->wlog, "heirloom-worker["));
	assert_false(has_now(f->wlog, "info: "));
	assert_true(has_now(err_log, "<3>invalid capacities"));
	assert_false(has_now(err_log, "heirloom-worker["));
	assert_false(has_now(err_log, "error: "));
	(void)hl_t_wait_exit(w2, hl_t_ms(10000));
	hl_t_kfx_untrack(f, w2);

	/* The same worker run with a stream that is not its stderr. */
	setenv("JOURNAL_STREAM", "1:1", 1);
	w = worker_logging(f, NULL, other_log);
	unsetenv("JOURNAL_STREAM");
	stop(f, w);
	assert_true(has_now(other_log, "heirloom-worker["));
	assert_false(has_now(other_log, "<6>"));
}

static void
test_syslog_prefixes_on_request(void **state)
{
	struct hl_t_kfx *f = *state;
	char want[96];
	const char *const syslog[] = { "--log-format", "syslog", NULL };
	pid_t w = worker_logging(f, syslog, f->wlog);
	snprintf(want, sizeof(want), "<6>heirloom-worker[%d]: serving /heirloom.", (int)w);
	stop(f, w);
	assert_true(has_now(f->wlog, want));
	/* The keeper's, through the variable. */
	setenv("HEIRLOOM_LOG_FORMAT", "syslog", 1);
	pid_t k = hl_t_kfx_track(f, hl_t_keeper_startv(f->name, f->sock, NULL, f->klog));
	unsetenv("HEIRLOOM_LOG_FORMAT");
	snprintf(want, sizeof(want), "<6>heirloom-keeper[%d]: listening on ", (int)k);
	assert_true(hl_t_file_has(f->klog, want, hl_t_ms(5000)));
}

static void
write_conf(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	assert_int_equal(fclose(fp), 0);
}

static int
alive(pid_t pid)
{
	return waitpid(pid, NULL, WNOHANG) == 0;
}

static void
connect_keeper(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
}

static void
publish_and_get(struct hl_client *c, const char *value)
{
	char buf[32];
	size_t len = 0;
	assert_int_equal(hl_publish(c, "k", 1, value, strlen(value), NULL, 0), 0);
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	assert_int_equal(hl_get(c, "k", 1, buf, sizeof(buf), &len, NULL), 0);
	assert_int_equal(len, strlen(value));
	assert_memory_equal(buf, value, len);
}

/* SIGHUP to the keeper and to its worker: both keep serving, both take the
 * new log level from the file; a broken file is reported and changes
 * nothing; the worker still stops cleanly afterwards. */
static void
test_sighup_reloads_the_log_level_and_never_stops(void **state)
{
	struct hl_t_kfx *f = *state;
	char conf[160];
	snprintf(conf, sizeof(conf), "%s/log.conf", f->dir);
	write_conf(conf, "[heirloom]\nlog-level = info\n");
	setenv("HEIRLOOM_CONFIG", conf, 1);
	pid_t k = hl_t_kfx_track(f, hl_t_keeper_startv(f->name, f->sock, NULL, f->klog));
	pid_t w = hl_t_kfx_track(f, hl_t_kworker_start(f->name, f->sock, f->wlog));
	unsetenv("HEIRLOOM_CONFIG");
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	publish_and_get(c, "one");
	assert_false(has_now(f->wlog, "debug: "));

	write_conf(conf, "[heirloom]\nlog-level = debug\n");
	assert_int_equal(kill(w, SIGHUP), 0);
	assert_int_equal(kill(k, SIGHUP), 0);
	assert_true(hl_t_file_has(f->wlog, "SIGHUP: reloaded", hl_t_ms(5000)));
	assert_true(hl_t_file_has(f->klog, "SIGHUP: reloaded", hl_t_ms(5000)));
	assert_true(has_now(f->wlog, "log level debug"));
	assert_true(has_now(f->klog, "log level debug"));
	assert_true(alive(w));
	assert_true(alive(k));
	/* Serving, at the new level: a new client is adopted (a debug line)
	 * and served; the keeper answers a connection (a debug line). */
	struct hl_client *c2 = hl_t_open(f->name, HL_OPEN_SYNC);
	publish_and_get(c2, "two");
	assert_true(hl_t_file_has(f->wlog, "debug: endpoint ", hl_t_ms(5000)));
	connect_keeper(f->sock);
	assert_true(hl_t_file_has(f->klog, "debug: connection from pid", hl_t_ms(5000)));

	/* A broken file: logged, nothing changes, nobody stops. */
	write_conf(conf, "[heirloom]\nlog-level = loud\n");
	assert_int_equal(kill(w, SIGHUP), 0);
	assert_int_equal(kill(k, SIGHUP), 0);
	assert_true(
	        hl_t_file_has(f->wlog, "error: SIGHUP: configuration not reloaded", hl_t_ms(5000)));
	assert_true(
	        hl_t_file_has(f->klog, "error: SIGHUP: configuration not reloaded", hl_t_ms(5000)));
	publish_and_get(c, "three");
	connect_keeper(f->sock);
	assert_true(alive(w));
	assert_true(alive(k));
	hl_close(c2);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_kfx_untrack(f, w);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, hl_t_kfx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_log_level_filters_and_errors_say_so),
		T(test_journald_gets_priorities_and_no_doubled_prefix),
		T(test_syslog_prefixes_on_request),
		T(test_sighup_reloads_the_log_level_and_never_stops),
	};
#undef T
	return cmocka_run_group_tests_name("logging", tests, NULL, NULL);
}
