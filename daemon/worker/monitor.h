/* SPDX-License-Identifier: MIT */
/*
 * monitor.h: the monitor thread: recovery's part 2, then the watch over
 * client processes (pidfds, polling, the prune pass), the cleanup of
 * killed endpoints, the slow-reader report, telemetry's tick, damage and
 * fencing. Calls recovery.c, endpoint.c, observers.c, keys.c, telemetry.c
 * and wake.c.
 */
#ifndef HL_W_MONITOR_H
#define HL_W_MONITOR_H

#include "worker.h"

int hl_w_monitor_start(struct hl_worker *w);
/* Recovery's part 2 as the monitor runs it first thing (pause hook, part
 * 2, serve, one prune pass, worker_ready); worker.c runs it in the calling
 * thread when no thread runs (the fuzz target). */
int hl_w_monitor_recover(struct hl_worker *w);
void hl_w_prune(struct hl_worker *w);

#endif /* HL_W_MONITOR_H */
