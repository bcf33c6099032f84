/* SPDX-License-Identifier: MIT */
/*
 * Latency and rate samples for the benchmarks: collection, percentiles,
 * the one-line table row, raw sample files and the JSON summary.
 *
 * This module owns only numbers and files under the output directory. It
 * never forks, never touches shared memory and never exits the process:
 * every failure comes back as a negative errno, so a scenario can report
 * what it has and still clean up its children (see harness.h for those).
 *
 * Samples are uint64_t. A latency series holds nanoseconds (printed in
 * microseconds, stored raw in ns); a rate series holds events per second
 * measured over one sub-window each (printed and stored as they are).
 *
 * Threads: none of this is thread-safe; one series belongs to one thread.
 * stats_append_json() alone may be called by several processes at once on
 * the same file: it takes an flock(2) for the read-modify-write.
 */
#ifndef HL_BENCH_STATS_H
#define HL_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A growable array of samples, in the order they were recorded. Caller's
 * storage: stats_init() before use, stats_fini() frees the array. */
struct stats_samples {
	uint64_t *v;
	size_t n;
	size_t cap;
};

/* Order statistics of one set of samples, nearest-rank: pXX is the smallest
 * sample with at least XX% of the samples at or below it, so every figure is
 * a value that was actually measured (no interpolation between two). */
struct stats_summary {
	size_t n;
	uint64_t min;
	uint64_t p50;
	uint64_t p90;
	uint64_t p99;
	uint64_t p999;
	uint64_t max;
	double mean;
	/* CPU ns per delivered message, all processes (harness.h,
	 * bench_cpu_begin): median of the repetitions, their range, and the
	 * daemons' part; -1 when not measured. */
	double cpu_ns, cpu_min_ns, cpu_max_ns, cpu_daemon_ns;
};

/* Repetitions whose medians differ by more than this ratio (max/min) are
 * flagged: on a shared 2-core machine that usually means a neighbour ran
 * during one repetition, and the merged figures mix two regimes. */
#define STATS_SPREAD_WARN 1.25

/* Default place of the JSON summary, relative to the repository root. */
#define STATS_DEFAULT_JSON "bench/results/summary.json"

/* What a series holds, which decides how it is printed. */
enum stats_kind {
	STATS_LATENCY, /* ns; the table shows us, JSON and raw files keep ns */
	STATS_RATE,    /* events per second per sub-window, shown as they are */
};

/* CLOCK_MONOTONIC in nanoseconds. Comparable across processes of one boot,
 * which is what lets a producer stamp a message that a consumer subtracts
 * from its own reading. */
uint64_t stats_now_ns(void);

void stats_init(struct stats_samples *s);
void stats_fini(struct stats_samples *s);

/* Make room for n more samples so that a timed loop never reallocates.
 * Returns 0 or -ENOMEM; on failure s is unchanged. */
int stats_reserve(struct stats_samples *s, size_t n);

/* Append one sample. Returns 0 or -ENOMEM; on failure s is unchanged. */
int stats_add(struct stats_samples *s, uint64_t v);

/* Append every sample of src to dst (merging repetitions). Returns 0 or
 * -ENOMEM; on failure dst is unchanged. */
int stats_merge(struct stats_samples *dst, const struct stats_samples *src);

/* Summarise s without reordering it (it sorts a copy). Returns 0, -EINVAL
 * for an empty set, or -ENOMEM; on failure *out is unchanged. */
int stats_summarize(const struct stats_samples *s, struct stats_summary *out);

/* Median of s (nearest rank), or 0 for an empty set or when memory for the
 * sorted copy is missing. */
uint64_t stats_median(const struct stats_samples *s);

/* Spread of per-repetition medians as max/min (1.0 = identical; 0 medians
 * count as 1 ns so the ratio stays finite). When it exceeds
 * STATS_SPREAD_WARN and warn is not NULL, one warning line naming label goes
 * to warn. Fewer than two medians give 1.0. */
double stats_spread(const uint64_t *medians, size_t n, const char *label, FILE *warn);

/* The table: header once, then one row per series:
 *   scenario | variant | n | p50 | p90 | p99 | p99.9 | unit | cpu
 * cpu = CPU-us per delivered message over every process involved (median of
 * the repetitions), "-" when not measured. */
void stats_print_header(FILE *f);
void stats_print_row(FILE *f, const char *scenario, const char *variant, enum stats_kind kind,
                     const char *unit, const struct stats_summary *sum);

/* Write the samples to path, one decimal number per line, in recording
 * order. Returns 0 or a negative errno; a failed write leaves a partial
 * file behind, which the caller may unlink. */
int stats_write_raw(const struct stats_samples *s, const char *path);

/* Append one summary object to the JSON array in path (NULL means
 * STATS_DEFAULT_JSON), creating the file as "[ ... ]" when it is missing or
 * empty. The file stays a valid JSON array after every call. Fields:
 * scenario, variant, kind ("latency"|"rate"), unit ("ns" or the rate
 * unit), n, reps, min, p50, p90, p99, p999, max, mean, spread, nproc,
 * kernel, time (Unix seconds), and when measured cpu_ns, cpu_min_ns,
 * cpu_max_ns, cpu_daemon_ns (per delivered message). Returns 0, -EINVAL when the file exists but
 * does not end in ']', or another negative errno; on failure the file is
 * unchanged. */
int stats_append_json(const char *path, const char *scenario, const char *variant,
                      enum stats_kind kind, const char *unit, const struct stats_summary *sum,
                      unsigned reps, double spread);

#endif /* HL_BENCH_STATS_H */
