/* SPDX-License-Identifier: MIT */
/*
 * test_worker_config.c: heirloom-worker's options come from a flag, else
 * HEIRLOOM_*, else the config file, else the default, and it says which
 * (--print-config); a bad config file is an error naming the file and the
 * line (exit 1); --help lists every option with its default and variable;
 * the resolved values are the ones the running worker uses. The file's
 * shared sections ([heirloom] and the top) serve both daemons: each skips
 * the other's options and still fails on unknown ones (with the keeper's
 * --print-config); the example config loads in both.
 *
 * Each case runs the real binary with an environment of its own (so the
 * test's environment cannot leak in) and reads what it prints.
 */
#include "config.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct run {
	int status; /* exit status, 128 + signal, or -1 if it did not end */
	char out[16384];
	char err[4096];
};

/* Read what is there from fd into buf (keeping it NUL-terminated). */
static void
drain_fd(int fd, char *buf, size_t cap, size_t *len)
{
	for (;;) {
		if (*len + 1 >= cap) {
			char sink[256];
			if (read(fd, sink, sizeof(sink)) <= 0)
				return;
			continue;
		}
		ssize_t n = read(fd, buf + *len, cap - 1 - *len);
		if (n <= 0)
			return;
		*len += (size_t)n;
		buf[*len] = '\0';
	}
}

/* Run PROG with ARGS (NULL-terminated) and exactly the environment ENV
 * (NULL-terminated "NAME=value" list), bounded in time. */
static void
run_prog(const char *prog, const char *const *args, const char *const *env, struct run *r)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = prog;
	for (int i = 0; args[i] && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	int po[2], pe[2];
	assert_int_equal(pipe2(po, O_CLOEXEC), 0);
	assert_int_equal(pipe2(pe, O_CLOEXEC), 0);
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		execve(argv[0], (char *const *)argv, (char *const *)env);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	memset(r, 0, sizeof(*r));
	size_t ol = 0, el = 0;
	struct pollfd p[2] = { { .fd = po[0], .events = POLLIN },
		               { .fd = pe[0], .events = POLLIN } };
	int open_fds = 2;
	for (int waited = 0; open_fds > 0 && waited < hl_t_ms(10000); waited += 10) {
		if (poll(p, 2, 10) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			char tmp[4096];
			ssize_t k = read(p[i].fd, tmp, sizeof(tmp));
			if (k <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				open_fds--;
				continue;
			}
			char *buf = i == 0 ? r->out : r->err;
			size_t cap = i == 0 ? sizeof(r->out) : sizeof(r->err);
			size_t *len = i == 0 ? &ol : &el;
			size_t take = (size_t)k < cap - 1 - *len ? (size_t)k : cap - 1 - *len;
			memcpy(buf + *len, tmp, take);
			*len += take;
			buf[*len] = '\0';
		}
	}
	for (int i = 0; i < 2; i++)
		if (p[i].fd >= 0) {
			drain_fd(p[i].fd, i == 0 ? r->out : r->err,
			         i == 0 ? sizeof(r->out) : sizeof(r->err), i == 0 ? &ol : &el);
			close(p[i].fd);
		}
	r->status = hl_t_wait_exit(pid, hl_t_ms(10000));
	if (r->status < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
}

static void
run_worker(const char *const *args, const char *const *env, struct run *r)
{
	run_prog(HL_WORKER_PATH, args, env, r);
}

static char conf_path[128];

static const char *
write_conf(const char *text)
{
	snprintf(conf_path, sizeof(conf_path), "/tmp/hl_worker_config_%d.conf", (int)getpid());
	FILE *f = fopen(conf_path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return conf_path;
}

static int
teardown(void **state)
{
	(void)state;
	unlink(conf_path);
	return 0;
}

/* The --print-config line of OPTION in R, without its newline. */
static const char *
line_of(const struct run *r, const char *option, char *buf, size_t cap)
{
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "%s = ", option);
	const char *p = r->out;
	while (p && *p) {
		if (strncmp(p, prefix, strlen(prefix)) == 0) {
			size_t n = strcspn(p, "\n");
			snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
			return buf;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	fail_msg("no line for %s in:\n%s", option, r->out);
	return NULL;
}

static void
expect_line(const struct run *r, const char *option, const char *want)
{
	char buf[256];
	assert_int_equal(r->status, 0);
	assert_string_equal(line_of(r, option, buf, sizeof(buf)), want);
}

/* prune-interval (a duration) and spin-us (an integer) through all four
 * sources, each time with every lower source present too. */
static void
test_flag_over_env_over_file_over_default(void **state)
{
	(void)state;
	static struct run r;
	const char *path = write_conf("# worker options\n"
	                              "[heirloom]\n"
	                              "spin-us = 1\n"
	                              "[keeper]\n"
	                              "spawn-worker = /nowhere\n"
	                              "[worker]\n"
	                              "prune-interval = 5s\n"
	                              "spin-us = 7\n");
	char cfg_env[160], line[256];
	snprintf(cfg_env, sizeof(cfg_env), "HEIRLOOM_CONFIG=%s", path);
	const char *const print[] = { "--print-config", NULL };

	const char *const none[] = { NULL };
	run_worker(print, none, &r);
	expect_line(&r, "prune-interval", "prune-interval = 30000ms  (default)");
	expect_line(&r, "spin-us", "spin-us = 50  (default)");
	expect_line(&r, "slow-reader-ms", "slow-reader-ms = 10000ms  (default)");

	const char *const file[] = { cfg_env, NULL };
	run_worker(print, file, &r);
	snprintf(line, sizeof(line), "prune-interval = 5000ms  (file:%s:7)", path);
	expect_line(&r, "prune-interval", line);
	/* [worker] overrides [heirloom]; [keeper] is someone else's. */
	snprintf(line, sizeof(line), "spin-us = 7  (file:%s:8)", path);
	expect_line(&r, "spin-us", line);

	const char *const env[] = { cfg_env, "HEIRLOOM_PRUNE_INTERVAL=2m", "HEIRLOOM_SPIN_US=9",
		                    NULL };
	run_worker(print, env, &r);
	expect_line(&r, "prune-interval", "prune-interval = 120000ms  (env)");
	expect_line(&r, "spin-us", "spin-us = 9  (env)");

	const char *const flags[] = { "--print-config", "--prune-interval", "250", "--spin-us=11",
		                      NULL };
	run_worker(flags, env, &r);
	expect_line(&r, "prune-interval", "prune-interval = 250ms  (flag)");
	expect_line(&r, "spin-us", "spin-us = 11  (flag)");

	/* --config as a flag finds the same file. */
	const char *const by_flag[] = { "--print-config", "--config", path, NULL };
	run_worker(by_flag, none, &r);
	snprintf(line, sizeof(line), "prune-interval = 5000ms  (file:%s:7)", path);
	expect_line(&r, "prune-interval", line);

	/* 0 is allowed: it turns the periodic pass off. */
	const char *const off[] = { "--print-config", "--prune-interval", "0", NULL };
	run_worker(off, none, &r);
	expect_line(&r, "prune-interval", "prune-interval = 0ms  (flag)");
}

static void
expect_error(const char *const *args, const char *const *env, const char *needle1,
             const char *needle2)
{
	static struct run r;
	run_worker(args, env, &r);
	if (r.status != 1 || !strstr(r.err, needle1) || (needle2 && !strstr(r.err, needle2)))
		fail_msg("status %d, stderr '%s': want 1 and '%s' '%s'", r.status, r.err, needle1,
		         needle2 ? needle2 : "");
	assert_string_equal(r.out, ""); /* nothing started, nothing printed */
}

static void
test_bad_config_file_names_file_and_line(void **state)
{
	(void)state;
	char where[160], cfg_env[160];
	const char *path = write_conf("[worker]\n"
	                              "spin-us = 3\n"
	                              "prune-interval = banana\n");
	snprintf(cfg_env, sizeof(cfg_env), "HEIRLOOM_CONFIG=%s", path);
	snprintf(where, sizeof(where), "%s:3", path);
	const char *const env[] = { cfg_env, NULL };
	const char *const print[] = { "--print-config", NULL };
	expect_error(print, env, where, "prune-interval");
	/* Even when a flag overrides the bad line: it must not lie in wait. */
	const char *const flag[] = { "--print-config", "--prune-interval", "1s", NULL };
	expect_error(flag, env, where, "prune-interval");

	path = write_conf("[worker]\n\nno-such-option = 1\n");
	snprintf(where, sizeof(where), "%s:3", path);
	expect_error(print, env, where, "no-such-option");

	path = write_conf("[worker\n");
	snprintf(where, sizeof(where), "%s:1", path);
	expect_error(print, env, where, NULL);

	/* A missing explicit file, a bad flag, a bad variable. */
	const char *const missing[] = { "--print-config", "--config", "/nonexistent/w.conf", NULL };
	const char *const none[] = { NULL };
	expect_error(missing, none, "/nonexistent/w.conf", NULL);
	const char *const bad_flag[] = { "--print-config", "--spin-us", "fast", NULL };
	expect_error(bad_flag, none, "--spin-us", "fast");
	const char *const bad_env[] = { "HEIRLOOM_SLOW_READER_MS=-5", NULL };
	expect_error(print, bad_env, "HEIRLOOM_SLOW_READER_MS", NULL);
	const char *const unknown[] = { "--print-config", "--prune", "1", NULL };
	expect_error(unknown, none, "--prune", NULL);
}

static void
test_help_lists_every_option_with_default_and_variable(void **state)
{
	(void)state;
	static struct run r;
	static const char *const options[] = {
		"name",      "config",         "standalone",     "socket",
		"shards",    "max-keys",       "max-observers",  "max-endpoints",
		"max-value", "heap",           "req-ring",       "ev-ring",
		"mode",      "prune-interval", "slow-reader-ms", "telemetry-interval",
		"spin-us",   "print-config",   "log-level",      "log-format",
		NULL
	};
	const char *const help[] = { "--help", NULL };
	const char *const none[] = { NULL };
	run_worker(help, none, &r);
	assert_int_equal(r.status, 0);
	for (int i = 0; options[i]; i++) {
		char flag[64], bflag[64], var[64];
		snprintf(flag, sizeof(flag), "--%s=", options[i]);
		snprintf(bflag, sizeof(bflag), "--[no-]%s", options[i]); /* booleans */
		snprintf(var, sizeof(var), "HEIRLOOM_");
		for (const char *p = options[i]; *p; p++) {
			size_t n = strlen(var);
			var[n] = *p == '-' ? '_' : (char)(*p - 'a' + 'A');
			if (*p >= '0' && *p <= '9')
				var[n] = *p;
			var[n + 1] = '\0';
		}
		if ((!strstr(r.out, flag) && !strstr(r.out, bflag)) || !strstr(r.out, var))
			fail_msg("--help lacks %s or %s", flag, var);
	}
	assert_non_null(strstr(r.out, "default 30s"));   /* prune-interval */
	assert_non_null(strstr(r.out, "default 10000")); /* slow-reader-ms */
	assert_non_null(strstr(r.out, "default 0660"));  /* mode */
	assert_non_null(strstr(r.out, "[worker]"));

	const char *const version[] = { "--version", NULL };
	run_worker(version, none, &r);
	assert_int_equal(r.status, 0);
	char want[64];
	snprintf(want, sizeof(want), "%d.%d.%d", HL_VERSION_MAJOR, HL_VERSION_MINOR,
	         HL_VERSION_PATCH);
	assert_non_null(strstr(r.out, want));
}

/* The worker runs with what was resolved: capacities from the environment
 * and the file show in the segment it creates. */
static void
test_running_worker_uses_resolved_values(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	const char *path = write_conf("[worker]\nmax-keys = 1000\nmax-endpoints = 9\n"
	                              "heap = 1M\nstandalone = yes\n");
	char cfg_env[160], name_env[96];
	snprintf(cfg_env, sizeof(cfg_env), "HEIRLOOM_CONFIG=%s", path);
	snprintf(name_env, sizeof(name_env), "HEIRLOOM_NAME=%s", name);
	const char *const env[] = { cfg_env, name_env, "HEIRLOOM_MAX_ENDPOINTS=7",
		                    "HEIRLOOM_MAX_OBSERVERS=5000", NULL };
	const char *const argv[] = { HL_WORKER_PATH, "--max-value", "2K", NULL };
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		hl_t_child_setup();
		if (!getenv("HL_TEST_VERBOSE")) {
			int fd = open("/dev/null", O_WRONLY);
			dup2(fd, 2);
		}
		execve(argv[0], (char *const *)argv, (char *const *)env);
		_exit(127);
	}
	if (hl_t_wait_ready(name, hl_t_ms(10000)) != 0) {
		hl_t_kill9(pid);
		fail_msg("worker configured by env and file did not serve");
	}
	struct hl_client *c = hl_t_open(name, 0);
	struct hl_caps caps;
	assert_int_equal(hl_caps(c, &caps), 0);
	assert_int_equal(caps.max_endpoints, 7);    /* env over file */
	assert_int_equal(caps.max_keys, 1000);      /* file */
	assert_int_equal(caps.max_observers, 5000); /* env */
	assert_int_equal(caps.max_value, 2048);     /* flag */
	assert_true(caps.heap_bytes >= 1u << 20);   /* file (rounded up to its chunk) */
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(pid), 0);
	hl_t_unlink(name);
}

/* ---- the file both daemons read (issue 18) ---- */

/* In [heirloom] and above any section, each daemon skips the other's
 * options (stop-timeout is the keeper's, slow-reader-ms the worker's) and
 * takes its own and the common ones; the keeper has --print-config too. */
static void
test_each_daemon_skips_the_others_options_in_shared_sections(void **state)
{
	(void)state;
	static struct run r;
	char want[256];
	const char *path = write_conf("hang-timeout = 3s\n"
	                              "[heirloom]\n"
	                              "stop-timeout = 10s\n"
	                              "slow-reader-ms = 5000\n"
	                              "log-level = warning\n"
	                              "[keeper]\n"
	                              "restart-min = 200ms\n"
	                              "[worker]\n"
	                              "spin-us = 7\n");
	const char *const args[] = { "--config", path, "--print-config", NULL };
	const char *const none[] = { NULL };
	run_prog(HL_KEEPER_PATH, args, none, &r);
	snprintf(want, sizeof(want), "stop-timeout = 10000ms  (file:%s:3)", path);
	expect_line(&r, "stop-timeout", want);
	snprintf(want, sizeof(want), "hang-timeout = 3000ms  (file:%s:1)", path);
	expect_line(&r, "hang-timeout", want);
	snprintf(want, sizeof(want), "log-level = warning  (file:%s:5)", path);
	expect_line(&r, "log-level", want);
	snprintf(want, sizeof(want), "restart-min = 200ms  (file:%s:7)", path);
	expect_line(&r, "restart-min", want);
	assert_null(strstr(r.out, "slow-reader-ms"));

	run_worker(args, none, &r);
	snprintf(want, sizeof(want), "slow-reader-ms = 5000ms  (file:%s:4)", path);
	expect_line(&r, "slow-reader-ms", want);
	snprintf(want, sizeof(want), "log-level = warning  (file:%s:5)", path);
	expect_line(&r, "log-level", want);
	snprintf(want, sizeof(want), "spin-us = 7  (file:%s:9)", path);
	expect_line(&r, "spin-us", want);
	assert_null(strstr(r.out, "stop-timeout"));
}

/* Shared sections do not swallow typos, and a daemon's own section does
 * not take the other's options: both name the file and the line. */
static void
test_unknown_options_still_fail_with_file_and_line(void **state)
{
	(void)state;
	static struct run r;
	char where[200];
	const char *const none[] = { NULL };
	const char *path = write_conf("[heirloom]\nlog-level = info\nstop-timout = 1s\n");
	const char *const args[] = { "--config", path, "--print-config", NULL };
	snprintf(where, sizeof(where), "%s:3: unknown option 'stop-timout'", path);
	run_prog(HL_KEEPER_PATH, args, none, &r);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, where));
	run_worker(args, none, &r);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, where));

	path = write_conf("[worker]\nstop-timeout = 1s\n");
	snprintf(where, sizeof(where), "%s:2: option 'stop-timeout' is not a worker option", path);
	run_worker(args, none, &r);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, where));
	path = write_conf("[keeper]\nslow-reader-ms = 1s\n");
	snprintf(where, sizeof(where), "%s:2: option 'slow-reader-ms' is not a keeper option",
	         path);
	run_prog(HL_KEEPER_PATH, args, none, &r);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, where));

	/* A log level outside the list, from the file. */
	path = write_conf("[heirloom]\nlog-level = loud\n");
	snprintf(where, sizeof(where),
	         "%s:2: option 'log-level': 'loud' is not one of err, warning, info, debug", path);
	run_prog(HL_KEEPER_PATH, args, none, &r);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, where));
}

/* Add NAME (up to " = ") of every --print-config line in OUT to SEEN. */
static void
collect_names(const char *out, char seen[][48], int *n, int cap)
{
	for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		size_t len = strcspn(p, " \n");
		if (len == 0 || len >= 48)
			continue;
		char name[48];
		snprintf(name, sizeof(name), "%.*s", (int)len, p);
		if (!strcmp(name, "name") || !strcmp(name, "config"))
			continue; /* built in: never in a file */
		int dup = 0;
		for (int i = 0; i < *n; i++)
			dup |= !strcmp(seen[i], name);
		if (!dup && *n < cap)
			strcpy(seen[(*n)++], name);
	}
}

/* hl__daemon_option_names is exactly the union of both daemons' options
 * (a missing name already stops the daemon at start: config.c). */
static void
test_shared_option_names_are_both_daemons_options(void **state)
{
	(void)state;
	static struct run r;
	static char seen[96][48];
	int n = 0;
	const char *path = write_conf("# nothing\n");
	const char *const args[] = { "--print-config", "--config", path, NULL };
	const char *const none[] = { NULL };
	run_prog(HL_KEEPER_PATH, args, none, &r);
	assert_int_equal(r.status, 0);
	collect_names(r.out, seen, &n, 96);
	run_worker(args, none, &r);
	assert_int_equal(r.status, 0);
	collect_names(r.out, seen, &n, 96);
	int listed = 0;
	for (const char *const *p = hl__daemon_option_names; *p; p++, listed++) {
		int found = 0;
		for (int i = 0; i < n; i++)
			found |= !strcmp(seen[i], *p);
		if (!found)
			fail_msg("'%s' is in hl__daemon_option_names but no daemon has it", *p);
	}
	assert_int_equal(listed, n);
}

/* The installed example (docs/example.conf) loads in both daemons. */
static void
test_example_config_loads_in_both_daemons(void **state)
{
	(void)state;
	static struct run r;
	const char *const args[] = { "--config", HL_SOURCE_DIR "/docs/example.conf",
		                     "--print-config", NULL };
	const char *const none[] = { NULL };
	run_prog(HL_KEEPER_PATH, args, none, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "log-level = info  (file:"));
	run_worker(args, none, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "log-level = info  (file:"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_flag_over_env_over_file_over_default, teardown),
		cmocka_unit_test_teardown(test_bad_config_file_names_file_and_line, teardown),
		cmocka_unit_test(test_help_lists_every_option_with_default_and_variable),
		cmocka_unit_test_teardown(test_running_worker_uses_resolved_values, teardown),
		cmocka_unit_test_teardown(
		        test_each_daemon_skips_the_others_options_in_shared_sections, teardown),
		cmocka_unit_test_teardown(test_unknown_options_still_fail_with_file_and_line,
		                          teardown),
		cmocka_unit_test_teardown(test_shared_option_names_are_both_daemons_options,
		                          teardown),
		cmocka_unit_test(test_example_config_loads_in_both_daemons),
	};
	return cmocka_run_group_tests_name("worker_config", tests, NULL, NULL);
}
