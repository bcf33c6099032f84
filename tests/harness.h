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

/* A fresh segment name for this process ("t<pid>_<n>"), unlinked first. */
const char *hl_t_name(void);

/* Milliseconds scaled by HL_TEST_TIMEOUT_MULTIPLIER (default 1). */
int hl_t_ms(int ms);

/* Start heirloom-worker --standalone --name NAME plus extra args (NULL-
 * terminated), wait until it serves. Returns its pid (asserts on failure). */
pid_t hl_t_worker_start(const char *name, ...);
pid_t hl_t_worker_startv(const char *name, const char *const *extra);
/* SIGTERM and wait: returns the exit status (or 128+signal). */
int hl_t_worker_stop(pid_t pid);
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

/* Small capacity args for tests: --max-keys 4096 ... */
extern const char *const hl_t_small[];

#endif
