/* SPDX-License-Identifier: MIT */
/*
 * prom.c: the Prometheus text exposition format (0.0.4) of segments, for
 * heirloomctl stats --prometheus and metrics. Owns metric names, HELP
 * texts and the format's escaping rules; reads a segment only through
 * view.h, once per snapshot.
 *
 * Format rules kept here: one "# HELP" and one "# TYPE" line per family,
 * before its samples, and only for a family that has samples; a family's
 * samples together, every segment's in turn (so that several segments make
 * one valid exposition); counters named *_total; base units (seconds,
 * bytes); label values escaped (\\, \", \n); HELP text escaped (\\, \n);
 * every line ends with '\n'.
 *
 * Dispatch latency is the histogram heirloom_dispatch_latency_seconds: one
 * _bucket per upper bound le (seconds, inclusive as Prometheus means it:
 * the worker's exclusive bound 2^(i+7) ns minus the 1 ns of its
 * resolution) with the cumulative count, the last le="+Inf"; _count, the
 * total; _sum, the latencies' sum the worker keeps beside the buckets
 * (hl_shm_counters.dispatch_ns_sum, layout version 5).
 */
#include "prom.h"

#include <inttypes.h>
#include <string.h>

uint64_t
prom_bucket_lower_ns(unsigned i)
{
	return i == 0 ? 0 : 1ull << (i + 6);
}

uint64_t
prom_bucket_upper_ns(unsigned i)
{
	return 1ull << (i + 7);
}

struct family {
	const char *metric, *type, *help;
};

static const struct family scalars[PROM_NSCALAR] = {
	[PROM_PUBLISHES] = { "heirloom_publishes_total", "counter",
	                     "Publishes applied (the value changed)." },
	[PROM_SKIPPED] = { "heirloom_skipped_unchanged_total", "counter",
	                   "Publishes that changed nothing: the value was equal to the current "
	                   "one." },
	[PROM_DELETES] = { "heirloom_deletes_total", "counter",
	                   "Deletes applied (the key had a value)." },
	[PROM_NOTIFICATIONS] = { "heirloom_notifications_total", "counter",
	                         "Events written to observers' event rings." },
	[PROM_LAGGED_DROPS] = { "heirloom_lagged_drops_total", "counter",
	                        "Events dropped because an observer's event ring was full." },
	/* resyncs are made inside each client (hl_stats of that client counts
	 * its own); the segment has no total to export. */
	[PROM_OBSERVERS_ADDED] = { "heirloom_observers_added_total", "counter",
	                           "Observers added." },
	[PROM_OBSERVERS_REMOVED] = { "heirloom_observers_removed_total", "counter",
	                             "Observers removed." },
	[PROM_ENDPOINTS_ATTACHED] = { "heirloom_endpoints_attached_total", "counter",
	                              "Endpoints adopted by a worker." },
	[PROM_ENDPOINTS_REMOVED] = { "heirloom_endpoints_removed_total", "counter",
	                             "Endpoints removed." },
	[PROM_CLEANUP_RUNS] = { "heirloom_cleanup_runs_total", "counter",
	                        "Cleanups of an endpoint whose process exited." },
	[PROM_CLEANUP_REMOVED] = { "heirloom_cleanup_removed_total", "counter",
	                           "Observers removed by those cleanups." },
	[PROM_HANDOFFS] = { "heirloom_handoffs_total", "counter",
	                    "Times the keeper gave the table to a worker." },
	[PROM_REATTACHES] = { "heirloom_reattaches_total", "counter",
	                      "Worker attaches that ran recovery." },
	[PROM_RECOVERIES] = { "heirloom_recoveries_total", "counter", "Recovery passes run." },
	[PROM_ASYNC_ERRORS] = { "heirloom_async_errors_total", "counter",
	                        "Requests that failed with no caller waiting for the answer." },
	[PROM_KEYS] = { "heirloom_keys", "gauge", "Keys in the table." },
	[PROM_PREFIXES] = { "heirloom_prefixes", "gauge",
	                    "Prefixes observed (prefix entries; they share the key capacity)." },
	[PROM_WORKER_MEMORY] = { "heirloom_worker_memory_bytes", "gauge",
	                         "Worker process memory in use (jemalloc stats.allocated; 0 when "
	                         "unknown)." },
	[PROM_SLOW_ENDPOINTS] = { "heirloom_slow_endpoints", "gauge",
	                          "Endpoints whose events wait unread past the worker's "
	                          "--slow-reader-ms." },
	[PROM_KEYS_CAPACITY] = { "heirloom_keys_capacity", "gauge", "Keys the segment can hold." },
	[PROM_OBSERVERS] = { "heirloom_observers", "gauge", "Observers registered." },
	[PROM_OBSERVERS_CAPACITY] = { "heirloom_observers_capacity", "gauge",
	                              "Observers the segment can hold." },
	[PROM_ENDPOINTS] = { "heirloom_endpoints", "gauge", "Endpoints in use." },
	[PROM_ENDPOINTS_CAPACITY] = { "heirloom_endpoints_capacity", "gauge",
	                              "Endpoints the segment can hold." },
	[PROM_HEAP_USED] = { "heirloom_heap_used_bytes", "gauge",
	                     "Value heap bytes in allocated blocks." },
	[PROM_HEAP_CAPACITY] = { "heirloom_heap_capacity_bytes", "gauge", "Value heap size." },
	[PROM_REVISION] = { "heirloom_revision", "gauge", "The table's global revision." },
	[PROM_OWNER_EPOCH] = { "heirloom_owner_epoch", "gauge",
	                       "Owner epoch: moves by one on every change of the table's owner." },
	[PROM_WORKER_READY] = { "heirloom_worker_ready", "gauge",
	                        "1 while the segment says a worker serves." },
	[PROM_LAST_RECOVERY_REPAIRS] = { "heirloom_last_recovery_repairs", "gauge",
	                                 "Repairs made by the last recovery pass." },
	/* Issue 21: pools that ran out, the segment's size, descriptors. */
	[PROM_KEYS_FULL] = { "heirloom_keys_full_total", "counter",
	                     "Requests refused with ENOSPC because the key pool was full." },
	[PROM_OBSERVERS_FULL] = { "heirloom_observers_full_total", "counter",
	                          "Observes refused with ENOSPC because the observer pool was "
	                          "full." },
	[PROM_HEAP_FULL] = { "heirloom_heap_full_total", "counter",
	                     "Publishes refused with ENOSPC because the value heap was full." },
	[PROM_PIDFD_FAILURES] = { "heirloom_pidfd_failures_total", "counter",
	                          "Clients the worker could not watch with a pidfd (out of "
	                          "descriptors); they are watched by polling instead." },
	[PROM_ENDPOINTS_POLLED] = { "heirloom_endpoints_polled", "gauge",
	                            "Endpoints watched by polling their process because no pidfd "
	                            "could be had." },
	[PROM_PIDFD_CAPACITY] = { "heirloom_pidfd_capacity", "gauge",
	                          "Clients the worker can watch with a pidfd (its RLIMIT_NOFILE "
	                          "less its own needs)." },
	[PROM_SEGMENT_BYTES] = { "heirloom_segment_bytes", "gauge",
	                         "Size of the segment, every byte reserved in /dev/shm." },
	/* Hang detection (issue 22). */
	[PROM_WORKER_HUNG] = { "heirloom_worker_hung", "gauge",
	                       "1 while a thread of the running worker is past the hang "
	                       "timeout." },
};

#define LDH(field) atomic_load_explicit(&h->field, memory_order_relaxed)

int
prom_snap(struct prom_seg *p, const char *name)
{
	memset(p, 0, sizeof(*p));
	p->name = name;
	struct view v;
	p->err = view_open(&v, name);
	if (p->err)
		return p->err;
	const struct hl_shm_header *h = v.seg.h;
	struct view_stats s;
	struct view_owner ow;
	view_stats(&v, &s);
	view_owner(&v, &ow);
	view_liveness(&v, &p->live);
	p->running = ow.role == HL_ROLE_WORKER && ow.alive;
	p->dur_mode = atomic_load_explicit(&h->dur_mode, memory_order_relaxed);
	p->durable = view_durable(h, ow.keeper_alive);
	p->dur_failures = atomic_load_explicit(&h->dur_failures, memory_order_relaxed);
	const struct hl_stats *st = &s.st;
	uint64_t *x = p->v;
	x[PROM_PUBLISHES] = st->publishes;
	x[PROM_SKIPPED] = st->skipped_unchanged;
	x[PROM_DELETES] = st->deletes;
	x[PROM_NOTIFICATIONS] = st->notifications;
	x[PROM_LAGGED_DROPS] = st->lagged_drops;
	x[PROM_OBSERVERS_ADDED] = st->observers_added;
	x[PROM_OBSERVERS_REMOVED] = st->observers_removed;
	x[PROM_ENDPOINTS_ATTACHED] = st->endpoints_attached;
	x[PROM_ENDPOINTS_REMOVED] = st->endpoints_removed;
	x[PROM_CLEANUP_RUNS] = st->cleanup_runs;
	x[PROM_CLEANUP_REMOVED] = st->cleanup_removed;
	x[PROM_HANDOFFS] = st->handoffs;
	x[PROM_REATTACHES] = st->reattaches;
	x[PROM_RECOVERIES] = s.recoveries;
	x[PROM_ASYNC_ERRORS] = s.async_errors;
	x[PROM_KEYS] = st->keys;
	x[PROM_PREFIXES] = st->prefixes;
	x[PROM_WORKER_MEMORY] = st->worker_mem_bytes;
	x[PROM_SLOW_ENDPOINTS] = st->slow_endpoints;
	x[PROM_KEYS_CAPACITY] = h->max_keys;
	x[PROM_OBSERVERS] = st->observers;
	x[PROM_OBSERVERS_CAPACITY] = h->max_observers;
	x[PROM_ENDPOINTS] = st->endpoints;
	x[PROM_ENDPOINTS_CAPACITY] = h->max_endpoints;
	x[PROM_HEAP_USED] = st->heap_used;
	x[PROM_HEAP_CAPACITY] = st->heap_capacity;
	x[PROM_REVISION] = st->revision;
	x[PROM_OWNER_EPOCH] = st->epoch;
	x[PROM_WORKER_READY] = s.worker_ready != 0;
	x[PROM_LAST_RECOVERY_REPAIRS] = s.last_recovery_repairs;
	x[PROM_KEYS_FULL] = LDH(keys_full);
	x[PROM_OBSERVERS_FULL] = LDH(observers_full);
	x[PROM_HEAP_FULL] = LDH(heap_full);
	x[PROM_PIDFD_FAILURES] = LDH(pidfd_failures);
	x[PROM_ENDPOINTS_POLLED] = LDH(endpoints_polled);
	x[PROM_PIDFD_CAPACITY] = LDH(pidfd_capacity);
	x[PROM_SEGMENT_BYTES] = h->size;
	x[PROM_WORKER_HUNG] = p->running && p->live.hung;
	memcpy(p->hist, st->dispatch_hist, sizeof(p->hist));
	p->hist_sum_ns = s.dispatch_sum_ns;
	p->last_recovery_ns = st->last_recovery_ns;
	view_close(&v);
	return 0;
}

/* A label value with \, " and newline escaped. */
static void
label_value(FILE *f, const char *v)
{
	putc('"', f);
	for (const char *p = v; *p; p++) {
		if (*p == '\\' || *p == '"')
			putc('\\', f);
		if (*p == '\n')
			fputs("\\n", f);
		else
			putc(*p, f);
	}
	putc('"', f);
}

static void
family(FILE *f, const char *metric, const char *type, const char *help)
{
	/* HELP texts are ours and contain neither '\\' nor newlines. */
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
}

/* METRIC{segment="NAME" then the caller's labels, or "}" and a blank. */
static void
series(FILE *f, const char *metric, const char *seg)
{
	fputs(metric, f);
	fputs("{segment=", f);
	label_value(f, seg);
}

static void
sample_u64(FILE *f, const char *metric, const char *seg, uint64_t v)
{
	series(f, metric, seg);
	fprintf(f, "} %" PRIu64 "\n", v);
}

static void
sample_f(FILE *f, const char *metric, const char *seg, double v)
{
	series(f, metric, seg);
	fprintf(f, "} %.9g\n", v);
}

static size_t
readable(const struct prom_seg *segs, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += segs[i].err == 0;
	return k;
}

static void
write_histogram(FILE *f, const struct prom_seg *segs, size_t n)
{
	static const char m[] = "heirloom_dispatch_latency_seconds";
	family(f, m, "histogram",
	       "Dispatch latency: a publish applied to the last observer's event written, since "
	       "the segment was created.");
	for (size_t s = 0; s < n; s++) {
		const struct prom_seg *p = &segs[s];
		if (p->err)
			continue;
		uint64_t cum = 0;
		for (unsigned i = 0; i < PROM_HIST_BUCKETS; i++) {
			cum += p->hist[i];
			series(f, "heirloom_dispatch_latency_seconds_bucket", p->name);
			if (i + 1 < PROM_HIST_BUCKETS)
				fprintf(f, ",le=\"%.9g\"} %" PRIu64 "\n",
				        (double)(prom_bucket_upper_ns(i) - 1) / 1e9, cum);
			else
				fprintf(f, ",le=\"+Inf\"} %" PRIu64 "\n", cum);
		}
		sample_f(f, "heirloom_dispatch_latency_seconds_sum", p->name,
		         (double)p->hist_sum_ns / 1e9);
		sample_u64(f, "heirloom_dispatch_latency_seconds_count", p->name, cum);
	}
}

static void
write_heartbeats(FILE *f, const struct prom_seg *segs, size_t n)
{
	static const char m[] = "heirloom_heartbeat_age_seconds";
	int any = 0;
	for (size_t s = 0; s < n; s++) {
		const struct prom_seg *p = &segs[s];
		for (unsigned i = 0; !p->err && p->running && i < p->live.n; i++) {
			if (p->live.t[i].stopped)
				continue;
			if (!any++)
				family(f, m, "gauge",
				       "Time since a serving thread of the worker last made "
				       "progress.");
			series(f, m, p->name);
			/* Thread names are ours: "monitor", "shardN". */
			fprintf(f, ",thread=\"%s\"} %.3f\n", p->live.t[i].name,
			        (double)p->live.t[i].age_ns / 1e9);
		}
	}
}

/* Only segments whose keeper runs --durability snapshot or log. */
static void
write_durability(FILE *f, const struct prom_seg *segs, size_t n)
{
	int any = 0;
	for (size_t s = 0; s < n; s++)
		any |= !segs[s].err && segs[s].dur_mode != HL_DUR_NONE;
	if (!any)
		return;
	family(f, "heirloom_durable", "gauge",
	       "1 while the keeper's durability writer keeps the table on disk (--durability "
	       "snapshot or log), 0 after a write failed or when the keeper is gone.");
	for (size_t s = 0; s < n; s++)
		if (!segs[s].err && segs[s].dur_mode != HL_DUR_NONE)
			sample_u64(f, "heirloom_durable", segs[s].name, (uint64_t)segs[s].durable);
	family(f, "heirloom_durability_failures_total", "counter",
	       "Writes, fsyncs or renames of the state directory that failed.");
	for (size_t s = 0; s < n; s++)
		if (!segs[s].err && segs[s].dur_mode != HL_DUR_NONE)
			sample_u64(f, "heirloom_durability_failures_total", segs[s].name,
			           segs[s].dur_failures);
}

int
prom_write(FILE *f, const struct prom_seg *segs, size_t n)
{
	family(f, "heirloom_build_info", "gauge",
	       "Always 1: the version of the heirloomctl that exports these metrics and the "
	       "segment layout version it reads.");
	fprintf(f, "heirloom_build_info{version=\"%d.%d.%d\",layout_version=\"%u\"} 1\n",
	        HL_VERSION_MAJOR, HL_VERSION_MINOR, HL_VERSION_PATCH, HL_LAYOUT_VERSION);
	family(f, "heirloom_up", "gauge",
	       "1 when the segment could be read for this exposition, 0 when not (missing, no "
	       "permission, another layout version, damaged): then it has no other sample.");
	for (size_t s = 0; s < n; s++)
		sample_u64(f, "heirloom_up", segs[s].name, segs[s].err == 0);
	if (!readable(segs, n))
		return ferror(f) ? -1 : 0;

	for (unsigned m = 0; m < PROM_NSCALAR; m++) {
		family(f, scalars[m].metric, scalars[m].type, scalars[m].help);
		for (size_t s = 0; s < n; s++)
			if (!segs[s].err)
				sample_u64(f, scalars[m].metric, segs[s].name, segs[s].v[m]);
	}
	family(f, "heirloom_last_recovery_seconds", "gauge", "Duration of the last recovery pass.");
	for (size_t s = 0; s < n; s++)
		if (!segs[s].err)
			sample_f(f, "heirloom_last_recovery_seconds", segs[s].name,
			         (double)segs[s].last_recovery_ns / 1e9);
	family(f, "heirloom_hang_timeout_seconds", "gauge",
	       "The keeper kills a worker one of whose threads made no progress this long (0 = "
	       "hang detection off).");
	for (size_t s = 0; s < n; s++)
		if (!segs[s].err)
			sample_f(f, "heirloom_hang_timeout_seconds", segs[s].name,
			         (double)segs[s].live.timeout_ms / 1e3);
	write_histogram(f, segs, n);
	write_heartbeats(f, segs, n);
	write_durability(f, segs, n);
	return ferror(f) ? -1 : 0;
}
