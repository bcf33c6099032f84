/* SPDX-License-Identifier: MIT */
/*
 * prom.h: the Prometheus text exposition format (version 0.0.4) of one or
 * several segments, for heirloomctl stats --prometheus and metrics (its
 * standard output and its HTTP scrape target), and the bounds of the
 * dispatch latency buckets.
 *
 * Several segments make one exposition: each family's HELP and TYPE once,
 * then its samples for every segment, told apart by the label
 * segment="NAME". That is why a segment is first taken as a snapshot
 * (prom_snap()) and the writing (prom_write()) goes family by family.
 */
#ifndef HL_CTL_PROM_H
#define HL_CTL_PROM_H

#include "view.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* hl_stats.dispatch_hist: the worker files a dispatch that took t ns in
 * bucket 0 when t < 128, in bucket i (1..14) when 2^(i+6) <= t < 2^(i+7),
 * and in bucket 15 when t >= 2^21 (daemon/worker/dispatch.c, hist_bucket()). */
#define PROM_HIST_BUCKETS 16u

uint64_t prom_bucket_lower_ns(unsigned i);
/* Exclusive upper bound of bucket i < 15; bucket 15 has none. */
uint64_t prom_bucket_upper_ns(unsigned i);

/* The counters and gauges with one plain value per segment (prom.c's
 * table of names and HELP texts is in this order). */
enum prom_scalar {
	PROM_PUBLISHES,
	PROM_SKIPPED,
	PROM_DELETES,
	PROM_NOTIFICATIONS,
	PROM_LAGGED_DROPS,
	PROM_OBSERVERS_ADDED,
	PROM_OBSERVERS_REMOVED,
	PROM_ENDPOINTS_ATTACHED,
	PROM_ENDPOINTS_REMOVED,
	PROM_CLEANUP_RUNS,
	PROM_CLEANUP_REMOVED,
	PROM_HANDOFFS,
	PROM_REATTACHES,
	PROM_RECOVERIES,
	PROM_ASYNC_ERRORS,
	PROM_KEYS,
	PROM_PREFIXES,
	PROM_WORKER_MEMORY,
	PROM_SLOW_ENDPOINTS,
	PROM_KEYS_CAPACITY,
	PROM_OBSERVERS,
	PROM_OBSERVERS_CAPACITY,
	PROM_ENDPOINTS,
	PROM_ENDPOINTS_CAPACITY,
	PROM_HEAP_USED,
	PROM_HEAP_CAPACITY,
	PROM_REVISION,
	PROM_OWNER_EPOCH,
	PROM_WORKER_READY,
	PROM_LAST_RECOVERY_REPAIRS,
	PROM_KEYS_FULL,
	PROM_OBSERVERS_FULL,
	PROM_HEAP_FULL,
	PROM_PIDFD_FAILURES,
	PROM_ENDPOINTS_POLLED,
	PROM_PIDFD_CAPACITY,
	PROM_SEGMENT_BYTES,
	PROM_WORKER_HUNG,
	PROM_NSCALAR
};

/* One segment's numbers, read at one moment. */
struct prom_seg {
	const char *name;
	int err; /* 0: read; else view_open()'s error and nothing below is set */
	uint64_t v[PROM_NSCALAR];
	uint64_t hist[PROM_HIST_BUCKETS];
	uint64_t hist_sum_ns;
	uint64_t last_recovery_ns;
	struct view_live live;
	int running;           /* a worker owns the segment and runs: heartbeats mean something */
	uint32_t dur_mode;     /* HL_DUR_* */
	int durable;           /* view_durable() */
	uint64_t dur_failures; /* the writer's failures */
};

/* Read segment NAME into *P (it opens and closes it). Returns 0, or
 * view_open()'s error (also in p->err). NAME must outlive *P. */
int prom_snap(struct prom_seg *p, const char *name);

/* Write the exposition of the N segments of SEGS: heirloom_build_info,
 * heirloom_up{segment} for each (0 for one that could not be read, which
 * has no other sample), then every family. Returns 0, or -1 when writing
 * failed. */
int prom_write(FILE *f, const struct prom_seg *segs, size_t n);

#endif /* HL_CTL_PROM_H */
