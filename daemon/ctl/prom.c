/* SPDX-License-Identifier: MIT */
/*
 * prom.c: the Prometheus text exposition format (0.0.4) for heirloomctl
 * stats --prometheus. Owns metric names, HELP texts and the format's
 * escaping rules; reads only the snapshot it is given.
 *
 * Format rules kept here: one "# HELP" and one "# TYPE" line per family,
 * before its samples; a family's samples together; counters named *_total;
 * base units (seconds, bytes); label values escaped (\\, \", \n); HELP
 * text escaped (\\, \n); every line ends with '\n'.
 *
 * Dispatch latency is not a histogram here: a Prometheus histogram needs
 * _sum (the sum of the observed latencies) and the segment counts only
 * per-bucket hits, so a histogram would have to invent its _sum. It is the
 * gauge family heirloom_dispatch_latency_cumulative, one sample per upper
 * bound le (seconds, inclusive as Prometheus means it: the worker's
 * exclusive bound 2^(i+7) ns minus the 1 ns of its resolution) with the
 * cumulative count, the last le="+Inf" holding the total. histogram_quantile()
 * works on it as on a real histogram's _bucket series.
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

/* The label set {name="NAME"} with NAME escaped. */
static void
label(FILE *f, const char *name)
{
	fputs("{name=\"", f);
	for (const char *p = name; *p; p++) {
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

static void
sample(FILE *f, const char *metric, const char *name, uint64_t v)
{
	fputs(metric, f);
	label(f, name);
	fprintf(f, "} %" PRIu64 "\n", v);
}

struct metric {
	const char *metric, *type, *help;
	uint64_t v;
};

int
prom_write(FILE *f, const char *name, const struct view_stats *s, const struct hl_shm_header *h)
{
	const struct hl_stats *st = &s->st;
	const struct metric m[] = {
		{ "heirloom_publishes_total", "counter", "Publishes applied (the value changed).",
		  st->publishes },
		{ "heirloom_skipped_unchanged_total", "counter",
		  "Publishes that changed nothing: the value was equal to the current one.",
		  st->skipped_unchanged },
		{ "heirloom_deletes_total", "counter", "Deletes applied (the key had a value).",
		  st->deletes },
		{ "heirloom_notifications_total", "counter",
		  "Events written to observers' event rings.", st->notifications },
		{ "heirloom_lagged_drops_total", "counter",
		  "Events dropped because an observer's event ring was full.", st->lagged_drops },
		/* resyncs are made inside each client (hl_stats of that client
		 * counts its own); the segment has no total to export. */
		{ "heirloom_observers_added_total", "counter", "Observers added.",
		  st->observers_added },
		{ "heirloom_observers_removed_total", "counter", "Observers removed.",
		  st->observers_removed },
		{ "heirloom_endpoints_attached_total", "counter", "Endpoints adopted by a worker.",
		  st->endpoints_attached },
		{ "heirloom_endpoints_removed_total", "counter", "Endpoints removed.",
		  st->endpoints_removed },
		{ "heirloom_cleanup_runs_total", "counter",
		  "Cleanups of an endpoint whose process exited.", st->cleanup_runs },
		{ "heirloom_cleanup_removed_total", "counter",
		  "Observers removed by those cleanups.", st->cleanup_removed },
		{ "heirloom_handoffs_total", "counter",
		  "Times the keeper gave the table to a worker.", st->handoffs },
		{ "heirloom_reattaches_total", "counter", "Worker attaches that ran recovery.",
		  st->reattaches },
		{ "heirloom_recoveries_total", "counter", "Recovery passes run.", s->recoveries },
		{ "heirloom_async_errors_total", "counter",
		  "Requests that failed with no caller waiting for the answer.", s->async_errors },
		{ "heirloom_keys", "gauge", "Keys in the table.", st->keys },
		{ "heirloom_prefixes", "gauge",
		  "Prefixes observed (prefix entries; they share the key capacity).",
		  st->prefixes },
		{ "heirloom_worker_memory_bytes", "gauge",
		  "Worker process memory in use (jemalloc stats.allocated; 0 when unknown).",
		  st->worker_mem_bytes },
		{ "heirloom_slow_endpoints", "gauge",
		  "Endpoints whose events wait unread past the worker's --slow-reader-ms.",
		  st->slow_endpoints },
		{ "heirloom_keys_capacity", "gauge", "Keys the segment can hold.", h->max_keys },
		{ "heirloom_observers", "gauge", "Observers registered.", st->observers },
		{ "heirloom_observers_capacity", "gauge", "Observers the segment can hold.",
		  h->max_observers },
		{ "heirloom_endpoints", "gauge", "Endpoints in use.", st->endpoints },
		{ "heirloom_endpoints_capacity", "gauge", "Endpoints the segment can hold.",
		  h->max_endpoints },
		{ "heirloom_heap_used_bytes", "gauge", "Value heap bytes in allocated blocks.",
		  st->heap_used },
		{ "heirloom_heap_capacity_bytes", "gauge", "Value heap size.", st->heap_capacity },
		{ "heirloom_revision", "gauge", "The table's global revision.", st->revision },
		{ "heirloom_owner_epoch", "gauge",
		  "Owner epoch: moves by one on every change of the table's owner.", st->epoch },
		{ "heirloom_worker_ready", "gauge", "1 while the segment says a worker serves.",
		  (uint64_t)(s->worker_ready != 0) },
		{ "heirloom_last_recovery_repairs", "gauge",
		  "Repairs made by the last recovery pass.", s->last_recovery_repairs },
		/* Issue 21: pools that ran out, the segment's size, descriptors. */
		{ "heirloom_keys_full_total", "counter",
		  "Requests refused with ENOSPC because the key pool was full.",
		  atomic_load_explicit(&h->keys_full, memory_order_relaxed) },
		{ "heirloom_observers_full_total", "counter",
		  "Observes refused with ENOSPC because the observer pool was full.",
		  atomic_load_explicit(&h->observers_full, memory_order_relaxed) },
		{ "heirloom_heap_full_total", "counter",
		  "Publishes refused with ENOSPC because the value heap was full.",
		  atomic_load_explicit(&h->heap_full, memory_order_relaxed) },
		{ "heirloom_pidfd_failures_total", "counter",
		  "Clients the worker could not watch with a pidfd (out of descriptors); they "
		  "are watched by polling instead.",
		  atomic_load_explicit(&h->pidfd_failures, memory_order_relaxed) },
		{ "heirloom_endpoints_polled", "gauge",
		  "Endpoints watched by polling their process because no pidfd could be had.",
		  atomic_load_explicit(&h->endpoints_polled, memory_order_relaxed) },
		{ "heirloom_pidfd_capacity", "gauge",
		  "Clients the worker can watch with a pidfd (its RLIMIT_NOFILE less its own "
		  "needs).",
		  atomic_load_explicit(&h->pidfd_capacity, memory_order_relaxed) },
		{ "heirloom_segment_bytes", "gauge",
		  "Size of the segment, every byte reserved in /dev/shm.", h->size },
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		family(f, m[i].metric, m[i].type, m[i].help);
		sample(f, m[i].metric, name, m[i].v);
	}

	family(f, "heirloom_last_recovery_seconds", "gauge", "Duration of the last recovery pass.");
	fputs("heirloom_last_recovery_seconds", f);
	label(f, name);
	fprintf(f, "} %.9f\n", (double)st->last_recovery_ns / 1e9);

	family(f, "heirloom_dispatch_latency_cumulative", "gauge",
	       "Dispatches (publish applied to the last observer's event written) that took "
	       "at most le seconds, cumulative since the segment was created. Gauges, not a "
	       "histogram: the segment keeps no latency sum.");
	uint64_t cum = 0;
	for (unsigned i = 0; i < PROM_HIST_BUCKETS; i++) {
		cum += st->dispatch_hist[i];
		fputs("heirloom_dispatch_latency_cumulative", f);
		label(f, name);
		if (i + 1 < PROM_HIST_BUCKETS)
			fprintf(f, ",le=\"%.9g\"} %" PRIu64 "\n",
			        (double)(prom_bucket_upper_ns(i) - 1) / 1e9, cum);
		else
			fprintf(f, ",le=\"+Inf\"} %" PRIu64 "\n", cum);
	}
	return ferror(f) ? -1 : 0;
}

int
prom_write_liveness(FILE *f, const char *name, const struct view_live *l, int running)
{
	family(f, "heirloom_hang_timeout_seconds", "gauge",
	       "The keeper kills a worker one of whose threads made no progress this long "
	       "(0 = hang detection off).");
	fputs("heirloom_hang_timeout_seconds", f);
	label(f, name);
	fprintf(f, "} %.3f\n", (double)l->timeout_ms / 1e3);
	family(f, "heirloom_worker_hung", "gauge",
	       "1 while a thread of the running worker is past the hang timeout.");
	sample(f, "heirloom_worker_hung", name, (uint64_t)(running && l->hung));
	family(f, "heirloom_heartbeat_age_seconds", "gauge",
	       "Time since a serving thread of the worker last made progress.");
	for (unsigned i = 0; running && i < l->n; i++) {
		if (l->t[i].stopped)
			continue;
		fputs("heirloom_heartbeat_age_seconds", f);
		label(f, name);
		/* Thread names are ours: "monitor", "shardN". */
		fprintf(f, ",thread=\"%s\"} %.3f\n", l->t[i].name, (double)l->t[i].age_ns / 1e9);
	}
	return ferror(f) ? -1 : 0;
}
