/* SPDX-License-Identifier: MIT */
/*
 * heirloom_common.h: what every heirloom_* benchmark shares: finding (or
 * starting) the worker that serves the segment under test, opening clients
 * once it serves, killing and restarting it (reattach), and reading a
 * process's resident memory.
 *
 * The segment: scripts/bench starts a worker (or a keeper that spawns one)
 * on a fresh segment before each heirloom_* binary and passes
 *   HEIRLOOM_BENCH_NAME    the segment name,
 *   HEIRLOOM_BENCH_WORKER  the worker's command line (split at spaces), used
 *                          to restart a standalone worker after a SIGKILL,
 *   HEIRLOOM_BENCH_KEEPER  "1" when a keeper supervises the worker (then the
 *                          keeper restarts it, as in production).
 * Without HEIRLOOM_BENCH_NAME the binary starts its own standalone worker
 * (heirloom-worker next to the binary) on segment "bench-PID", and removes
 * the segment at exit: every binary also runs alone.
 *
 * A worker this module starts is not one of the harness's tracked children
 * (bench_reap_all() would wait for it): it dies with us by PR_SET_PDEATHSIG
 * and is stopped by hlb_teardown() or the atexit hook.
 *
 * Threads: none; the parent's main thread only.
 */
#ifndef HL_BENCH_HEIRLOOM_COMMON_H
#define HL_BENCH_HEIRLOOM_COMMON_H

/* The capacities the benchmarks were measured with: the defaults before
 * issue 21 (835 MB with 2 shards), kept so that figures stay comparable
 * (scripts/bench passes the same to the daemons it starts). The history
 * (issue 14) is 8 MiB a shard: publish-burst-idle's observer must be
 * caught up from it at a million publishes a second, on a loaded machine
 * too (the default 1 MiB holds about 40 ms of that). */
#define HLB_CAPACITIES                                                                             \
	"--max-keys 65536 --max-observers 1048576 --max-endpoints 1024 --heap 64M "                \
	"--req-ring 64K --ev-ring 256K --history 8M"

#include <stdint.h>
#include <sys/types.h>

#include "heirloom/heirloom.h"

/* Attach to or start the worker. Returns 0 or a negative errno (message on
 * stderr). Call once, before forking consumers. */
int hlb_setup(void);

/* The segment name in use (valid after hlb_setup()). */
const char *hlb_name(void);

/* Open a client on the bench segment, retrying until a worker serves it
 * (an observe round trip answered) or deadline_ns (stats_now_ns()). */
int hlb_open(uint32_t flags, uint64_t deadline_ns, struct hl_client **out);

/* The pid of the worker serving now (hl_stats owner), 0 if none. */
pid_t hlb_worker_pid(struct hl_client *c);

/* SIGKILL the serving worker. Returns its pid or a negative errno. */
int hlb_worker_kill(struct hl_client *c);

/* After hlb_worker_kill(): start a new standalone worker unless a keeper
 * does it. Returns 0 or a negative errno. */
int hlb_worker_restart(void);

/* Whether a keeper supervises the worker. */
int hlb_have_keeper(void);

/* Count the worker serving C (and its keeper, if one) in the CPU figures
 * (bench_cpu_watch()). */
void hlb_watch_daemons(struct hl_client *c);

/* VmRSS of PID in bytes (0 when unreadable). */
uint64_t hlb_rss_bytes(pid_t pid);

/* Stop a worker we started and remove a segment we created. */
void hlb_teardown(void);

#endif /* HL_BENCH_HEIRLOOM_COMMON_H */
