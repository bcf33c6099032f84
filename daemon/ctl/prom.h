/* SPDX-License-Identifier: MIT */
/*
 * prom.h: heirloomctl stats --prometheus, the Prometheus text exposition
 * format (version 0.0.4), and the bounds of the dispatch latency buckets.
 */
#ifndef HL_CTL_PROM_H
#define HL_CTL_PROM_H

#include "view.h"

#include <stdint.h>
#include <stdio.h>

/* hl_stats.dispatch_hist: the worker files a dispatch that took t ns in
 * bucket 0 when t < 128, in bucket i (1..14) when 2^(i+6) <= t < 2^(i+7),
 * and in bucket 15 when t >= 2^21 (daemon/worker/dispatch.c, hist_bucket()). */
#define PROM_HIST_BUCKETS 16u

uint64_t prom_bucket_lower_ns(unsigned i);
/* Exclusive upper bound of bucket i < 15; bucket 15 has none. */
uint64_t prom_bucket_upper_ns(unsigned i);

/* Write every counter and gauge of S, labelled name="NAME". Returns 0, or
 * -1 when writing failed. */
int prom_write(FILE *f, const char *name, const struct view_stats *s,
               const struct hl_shm_header *h);

/* Hang detection (issue 22): the keeper's timeout, whether the worker is
 * hung, and each serving thread's heartbeat age (labelled thread="...",
 * only while a worker RUNNING and for threads not stopped). Returns 0, or
 * -1 when writing failed. */
int prom_write_liveness(FILE *f, const char *name, const struct view_live *l, int running);

#endif /* HL_CTL_PROM_H */
