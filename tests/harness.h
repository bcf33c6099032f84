/* SPDX-License-Identifier: MIT */
/*
 * harness.h: what the tests share: unique segment names, starting and
 * stopping daemons as real processes, and bounded waits. Timeouts scale
 * with HL_TEST_TIMEOUT_MULTIPLIER (for sanitizers and slow machines); no
 * test asserts on how long anything took.
 */
#ifndef HL_TEST_HARNESS_H
#define HL_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

#include "heirloom/heirloom.h"

/* In a forked child that execs a daemon: die with the parent (SIGKILL),
 * stdout to /dev/null. */
void hl_t_child_setup(void);

/* fork() for tests: the child is SIGKILLed when the test process ends, so a
 * failed assertion in the parent never leaves a child behind holding
 * CTest's output pipe (which made CTest wait out its whole timeout). */
pid_t hl_t_fork(void);

/* A fresh segment name for this process ("t<pid>_<n>"), unlinked first. */
const char *hl_t_name(void);

/* Milliseconds scaled by HL_TEST_TIMEOUT_MULTIPLIER (default 1). */
int hl_t_ms(int ms);

/* Sleep MS milliseconds (not scaled: a pause, not a bound). */
void hl_t_sleep_ms(int ms);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t hl_t_now_ms(void);

/* Start heirloom-worker --standalone --name NAME plus extra args (NULL-
 * terminated), wait until it serves. Returns its pid (asserts on failure). */
pid_t hl_t_worker_start(const char *name, ...);
pid_t hl_t_worker_startv(const char *name, const char *const *extra);
/* The same without waiting: returns the pid at once (stderr as
 * hl_t_spawn(path NULL)); the caller waits as it needs. */
pid_t hl_t_worker_spawnv(const char *name, const char *const *extra);
/* SIGTERM and wait: returns the exit status (or 128+signal). */
int hl_t_worker_stop(pid_t pid);
/* SIGSTOP PID and wait until every one of its threads is stopped. */
void hl_t_stop_all(pid_t pid);
/* SIGKILL and reap. */
void hl_t_kill9(pid_t pid);
/* Wait for PID to exit within ms; exit status, or -1 on timeout. */
int hl_t_wait_exit(pid_t pid, int ms);
/* Wait until the segment's worker_ready flag is set (ms bound): 0 / -1. */
int hl_t_wait_ready(const char *name, int ms);

/* Open a client with a default timeout; asserts success. */
struct hl_client *hl_t_open(const char *name, uint32_t flags);

/* Remove the segment. */
void hl_t_unlink(const char *name);

/* hl_stats() of C; asserts success. */
struct hl_stats hl_t_stats(struct hl_client *c);

/* Small capacity args for tests: --max-keys 4096 ... */
extern const char *const hl_t_small[];

/* ---- the keeper and the heir protocol (tests/test_handoff.c) ---- */

/* Run ARGV (NULL-terminated, argv[0] a path) as a child process with its
 * stderr appended to ERR_PATH (NULL: /dev/null, or inherited when
 * HL_TEST_VERBOSE is set). Returns its pid; the caller reaps it. */
pid_t hl_t_spawn(const char *const *argv, const char *err_path);

/* Start heirloom-keeper --foreground --name NAME --socket SOCK with
 * hl_t_small and EXTRA (NULL-terminated, may be NULL), stderr to ERR_PATH
 * as hl_t_spawn(); wait until its socket accepts a connection. Returns its
 * pid (fails the test if it does not come up). */
pid_t hl_t_keeper_startv(const char *name, const char *sock, const char *const *extra,
                         const char *err_path);

/* Start heirloom-worker --name NAME --socket SOCK (through the keeper, not
 * standalone) and wait until it serves. Returns its pid. */
pid_t hl_t_kworker_start(const char *name, const char *sock, const char *err_path);

/* The heir protocol's fields of the segment header, read without a client. */
struct hl_t_owner {
	uint32_t role, pid; /* HL_ROLE_* (0 none, 1 keeper, 2 worker) */
	uint64_t epoch, handoffs;
	uint32_t keeper_pid, worker_ready;
	uint64_t recoveries; /* recovery passes finished (both parts) */
};
/* 0, or -1 when the segment cannot be read. */
int hl_t_owner_read(const char *name, struct hl_t_owner *o);

/* Wait up to MS until a worker other than NOT_PID owns the table and
 * serves (worker_ready). Returns its pid, or 0 on timeout. */
pid_t hl_t_wait_serving(const char *name, pid_t not_pid, int ms);

/* Wait up to MS until the owner record says ROLE (and PID, if not 0).
 * 0, or -1 on timeout. */
int hl_t_wait_owner(const char *name, uint32_t role, uint32_t pid, int ms);

/* The newest record of KIND for PID in the segment's log ring. */
struct hl_t_logrec {
	uint32_t kind, pid;
	int32_t code;
	uint64_t epoch;
	char text[32];
};
/* 0 and *out, or -1 when there is none. */
int hl_t_log_find(const char *name, uint32_t kind, uint32_t pid, struct hl_t_logrec *out);

/* Whether the file at PATH contains NEEDLE, waiting up to MS for it. */
int hl_t_file_has(const char *path, const char *needle, int ms);

/* ---- failure reports from forked children ---- */

/* Why a forked child failed, in memory shared with the test (embed it in
 * the scoreboard that hl_t_shared() maps); the first report wins. */
struct hl_t_fail {
	_Atomic int failed;
	char why[1024];
};

/* SIZE bytes of zeroed memory shared with the children the test forks
 * next (MAP_SHARED anonymous), for a scoreboard; asserts success. The
 * caller may munmap() it, or leave it to the end of the test process. */
void *hl_t_shared(size_t size);

/* In a forked child: record why it failed in F (unless another child did
 * first) and _exit(1). */
_Noreturn void hl_t_child_fail(struct hl_t_fail *f, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* ---- a keeper fixture (tests/test_handoff.c, tests/test_watchdog.c) ---- */

/* A fresh directory with the control socket and the daemons' stderr, a
 * fresh segment name, and the children the teardown ends. */
struct hl_t_kfx {
	char dir[64];
	char sock[128];
	char klog[128]; /* keepers' stderr */
	char wlog[128]; /* workers' stderr */
	char name[64];
	pid_t pids[32]; /* our children, killed and reaped by the teardown */
	int npids;
};

/* cmocka setup: *state = a new struct hl_t_kfx whose directory is
 * /tmp/hl-TAG-XXXXXX. 0, or -1 on failure. */
int hl_t_kfx_setup(void **state, const char *tag);

/* cmocka teardown for hl_t_kfx_setup(): with HL_TEST_VERBOSE, prints the
 * daemons' stderr; SIGKILLs and reaps every tracked child (SIGCONT first,
 * in case a test stopped it), then the worker the owner record names (a
 * supervising keeper's child is not ours); removes the segment and the
 * directory; frees the fixture. */
int hl_t_kfx_teardown(void **state);

/* Track PID for the teardown; returns PID. */
pid_t hl_t_kfx_track(struct hl_t_kfx *f, pid_t pid);

/* PID was reaped by the test itself: the teardown must not touch it. */
void hl_t_kfx_untrack(struct hl_t_kfx *f, pid_t pid);

/* The fixture most tests share: a worker on a fresh segment started with
 * EXTRA options, and one client of it opened with FLAGS. Use as cmocka
 * setup/teardown through a wrapper that passes the options. */
struct hl_t_fx {
	const char *name;
	pid_t worker;
	struct hl_client *c;
};
int hl_t_fx_setup(void **state, const char *const *extra, uint32_t flags);
int hl_t_fx_teardown(void **state);

#endif
