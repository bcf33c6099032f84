/* SPDX-License-Identifier: MIT */
/*
 * cmd_status.c: heirloomctl status and stats. Both read the segment through
 * view.h only (no endpoint, no worker needed) and never write to it;
 * stats --prometheus is cmd_metrics.c's.
 */
#include "ctl.h"
#include "out.h"
#include "prom.h"
#include "view.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static void
log_detail(const struct hl_shm_logrec *r, char *buf, size_t len)
{
	switch (r->kind) {
	case HL_LOG_WORKER_EXIT:
		if (r->code >= 0)
			snprintf(buf, len, "exit status %d", r->code);
		else if (r->code > -65)
			snprintf(buf, len, "killed by signal %d (SIG%s)", -r->code,
			         sigabbrev_np(-r->code) ? sigabbrev_np(-r->code) : "?");
		else
			snprintf(buf, len, "code %d", r->code);
		break;
	case HL_LOG_RECOVERY: snprintf(buf, len, "%d repairs", r->code); break;
	case HL_LOG_HUNG: snprintf(buf, len, "no progress for %d ms", r->code); break;
	case HL_LOG_BAD_CLIENT: snprintf(buf, len, "%s", hl_err_name(r->code)); break;
	default: snprintf(buf, len, "code %d", r->code); break;
	}
}

static void
write_log(struct out *o, const struct view *v)
{
	struct hl_shm_logrec recs[HL_ERRLOG_LEN];
	unsigned n = view_log(v, recs, HL_ERRLOG_LEN);
	out_arr_begin(o, "log");
	for (unsigned i = 0; i < n; i++) {
		char detail[64];
		log_detail(&recs[i], detail, sizeof(detail));
		out_obj_begin(o, NULL);
		out_time(o, "time", recs[i].time_ns);
		out_str(o, "kind", view_log_kind(recs[i].kind));
		out_u64(o, "pid", recs[i].pid);
		out_u64(o, "epoch", recs[i].epoch);
		out_i64(o, "code", recs[i].code);
		out_str(o, "detail", detail);
		out_str(o, "text", recs[i].text);
		out_obj_end(o);
	}
	out_arr_end(o);
}

/* Each serving thread's heartbeat age, and the timeout the keeper kills
 * at (issue 22). Ages mean something only while a worker runs. */
static void
write_heartbeats(struct out *o, const struct view_live *l, int running)
{
	out_obj_begin(o, "heartbeats");
	/* The keeper's --hang-timeout (0: off, or no keeper ever set it). */
	out_bool(o, "hang_detection", l->timeout_ms != 0);
	out_dur(o, "hang_timeout", l->timeout_ms * 1000000ull);
	out_arr_begin(o, "threads");
	for (unsigned i = 0; running && i < l->n; i++) {
		out_obj_begin(o, NULL);
		out_str(o, "thread", l->t[i].name);
		if (l->t[i].stopped) {
			out_str(o, "state", "stopped");
		} else {
			out_dur(o, "age", l->t[i].age_ns);
			out_str(o, "state", l->t[i].hung ? "hung" : "beating");
		}
		out_obj_end(o);
	}
	out_arr_end(o);
	out_obj_end(o);
}

void
ctl_write_capacities(struct out *o, const struct hl_shm_header *h)
{
	out_obj_begin(o, "capacities");
	out_u64(o, "keys", h->max_keys);
	out_u64(o, "observers", h->max_observers);
	out_u64(o, "endpoints", h->max_endpoints);
	out_u64(o, "value_bytes", h->max_value);
	out_u64(o, "shards", h->shards);
	out_u64(o, "request_ring_bytes", h->req_ring_bytes);
	out_u64(o, "event_ring_bytes", h->ev_ring_bytes);
	out_u64(o, "heap_bytes", h->heap_bytes);
	out_u64(o, "history_bytes", h->hist_bytes);
	out_obj_end(o);
}

void
ctl_write_sizes(struct out *o, const struct hl_layout_sizes *z)
{
	out_obj_begin(o, "size_bytes");
	out_u64(o, "total", z->total);
	out_u64(o, "header", z->header);
	out_u64(o, "keys", z->keys);
	out_u64(o, "observers", z->observers);
	out_u64(o, "heap", z->heap);
	out_u64(o, "history", z->history);
	out_u64(o, "endpoints", z->endpoints);
	out_u64(o, "per_endpoint", z->per_endpoint);
	out_obj_end(o);
}

/* The keeper's --durability (docs/architecture.md, "Durability"). */
static void
write_durability(struct out *o, const struct hl_shm_header *h, int keeper_alive)
{
	uint32_t mode = atomic_load_explicit(&h->dur_mode, memory_order_relaxed);
	uint32_t st = atomic_load_explicit(&h->dur_state, memory_order_acquire);
	int32_t err = atomic_load_explicit(&h->dur_err, memory_order_relaxed);
	out_obj_begin(o, "durability");
	out_str(o, "mode", view_dur_mode_name(mode));
	if (mode != HL_DUR_NONE) {
		char dir[HL_STATE_DIR_MAX];
		memcpy(dir, h->state_dir, sizeof(dir));
		dir[sizeof(dir) - 1] = 0;
		out_str(o, "state_dir", dir);
		/* durable: the writer's last operation succeeded and its keeper
		 * runs; anything else means changes may exist only in memory. */
		out_bool(o, "durable", view_durable(h, keeper_alive));
		out_str(o, "state",
		        keeper_alive || st == HL_DUR_ST_STOPPED ? view_dur_state_name(st)
		                                                : "keeper not running");
		if (err) {
			out_str(o, "last_error", hl_err_name(err));
			out_str(o, "last_error_message", hl_strerror(err));
		}
		out_u64(o, "failures",
		        atomic_load_explicit(&h->dur_failures, memory_order_relaxed));
		out_u64(o, "restore_pending",
		        atomic_load_explicit(&h->dur_restore, memory_order_relaxed));
		out_u64(o, "snapshots", atomic_load_explicit(&h->snapshots, memory_order_relaxed));
		out_u64(o, "last_snapshot_revision",
		        atomic_load_explicit(&h->snap_rev, memory_order_relaxed));
		out_u64(o, "last_snapshot_keys",
		        atomic_load_explicit(&h->snap_keys, memory_order_relaxed));
		uint64_t ns = atomic_load_explicit(&h->snap_ns, memory_order_relaxed);
		if (ns)
			out_time(o, "last_snapshot", ns);
		else
			out_null(o, "last_snapshot");
		if (mode == HL_DUR_LOG) {
			out_u64(o, "log_bytes",
			        atomic_load_explicit(&h->log_bytes, memory_order_relaxed));
			out_u64(o, "log_records",
			        atomic_load_explicit(&h->log_records, memory_order_relaxed));
		}
	}
	out_obj_end(o);
}

int
ctl_cmd_status(struct ctl *c, const struct ctl_args *a)
{
	(void)a;
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	const struct hl_shm_header *h = v.seg.h;
	struct view_owner ow;
	struct view_stats s;
	struct view_live live;
	view_owner(&v, &ow);
	view_stats(&v, &s);
	view_liveness(&v, &live);
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/heirloom.%s", c->name);

	struct out o;
	out_init(&o, stdout, c->json);
	out_obj_begin(&o, NULL);
	out_obj_begin(&o, "segment");
	out_str(&o, "name", c->name);
	out_str(&o, "path", path);
	out_u64(&o, "size", h->size);
	out_u64(&o, "layout_version", h->version);
	out_time(&o, "created", h->created_ns);
	out_obj_end(&o);

	/* What each capacity costs (issue 21): all of it is reserved in
	 * /dev/shm at creation. */
	struct hl_layout_sizes z;
	hl__layout_sizes(h, &z);
	ctl_write_sizes(&o, &z);
	ctl_write_capacities(&o, h);

	out_obj_begin(&o, "owner");
	out_str(&o, "role", view_role_name(ow.role));
	out_u64(&o, "pid", ow.pid);
	out_bool(&o, "alive", ow.alive);
	out_u64(&o, "epoch", ow.epoch);
	if (ow.torn)
		out_str(&o, "warning", "owner record kept changing; fields may be mixed");
	out_obj_end(&o);
	out_obj_begin(&o, "keeper");
	out_u64(&o, "pid", ow.keeper_pid);
	out_bool(&o, "alive", ow.keeper_alive);
	out_obj_end(&o);

	/* worker_ready stays set when a worker is SIGKILLed: "serving" also
	 * asks that the owner be a worker that still runs. */
	out_bool(&o, "worker_ready", s.worker_ready);
	/* A hung worker still runs and its worker_ready is still set: it
	 * is not serving (issue 22). */
	out_bool(&o, "serving",
	         s.worker_ready && ow.role == HL_ROLE_WORKER && ow.alive && !live.hung);
	out_str(&o, "worker", view_worker_state(&ow, &s, &live));
	write_heartbeats(&o, &live, ow.role == HL_ROLE_WORKER && ow.alive);
	out_u64(&o, "handoffs", s.st.handoffs);
	out_u64(&o, "reattaches", s.st.reattaches);
	out_u64(&o, "recoveries", s.recoveries);
	out_obj_begin(&o, "last_recovery");
	out_dur(&o, "duration", s.st.last_recovery_ns);
	out_u64(&o, "repairs", s.last_recovery_repairs);
	out_obj_end(&o);

	out_obj_begin(&o, "in_use");
	out_u64(&o, "keys", s.st.keys);
	out_u64(&o, "prefixes", s.st.prefixes); /* prefix entries, in the key pool too */
	out_u64(&o, "observers", s.st.observers);
	out_u64(&o, "endpoints", s.st.endpoints);
	out_u64(&o, "heap_used_bytes", s.st.heap_used);
	out_u64(&o, "heap_capacity_bytes", s.st.heap_capacity);
	out_u64(&o, "revision", s.st.revision);
	out_obj_end(&o);

	/* The history (issue 14): how far back a watcher can resume
	 * (heirloomctl watch --rev, hl_observe_opts.start_rev). A resume of
	 * a prefix needs every shard's; of a key, its shard's. */
	{
		uint64_t oldest = 0, appended = 0, used = 0;
		for (uint32_t s_ = 0; s_ < h->shards; s_++) {
			const struct hl_shm_hist *hc = hl__hist(&v.seg, s_);
			uint64_t fl = atomic_load_explicit(&hc->floor_rev, memory_order_relaxed);
			uint64_t hd = atomic_load_explicit(&hc->head, memory_order_relaxed);
			uint64_t tl = atomic_load_explicit(&hc->tail, memory_order_relaxed);
			oldest = fl > oldest ? fl : oldest;
			appended += atomic_load_explicit(&hc->appends, memory_order_relaxed);
			used += hd - tl <= h->hist_bytes ? hd - tl : 0;
		}
		out_obj_begin(&o, "history");
		out_u64(&o, "bytes_per_shard", h->hist_bytes);
		out_u64(&o, "bytes_used", used);
		out_u64(&o, "changes_appended", appended);
		/* A resume from this revision or later is accepted now. */
		out_u64(&o, "oldest_resumable_revision", oldest);
		out_obj_end(&o);
	}

	/* Requests refused because a pool was full (-ENOSPC), since creation. */
	out_obj_begin(&o, "pools_full");
	out_u64(&o, "keys", atomic_load_explicit(&h->keys_full, memory_order_relaxed));
	out_u64(&o, "observers", atomic_load_explicit(&h->observers_full, memory_order_relaxed));
	out_u64(&o, "heap", atomic_load_explicit(&h->heap_full, memory_order_relaxed));
	out_obj_end(&o);

	/* The worker's descriptors: how many clients it watches by pidfd. */
	out_obj_begin(&o, "descriptors");
	out_u64(&o, "nofile_limit", atomic_load_explicit(&h->nofile_limit, memory_order_relaxed));
	out_u64(&o, "pidfd_capacity",
	        atomic_load_explicit(&h->pidfd_capacity, memory_order_relaxed));
	out_u64(&o, "endpoints_polled",
	        atomic_load_explicit(&h->endpoints_polled, memory_order_relaxed));
	out_u64(&o, "pidfd_failures",
	        atomic_load_explicit(&h->pidfd_failures, memory_order_relaxed));
	out_obj_end(&o);

	write_durability(&o, h, ow.keeper_alive);
	write_log(&o, &v);
	out_obj_end(&o);
	view_close(&v);
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}

static void
write_counters(struct out *o, const struct view_stats *s)
{
	const struct hl_stats *st = &s->st;
	out_obj_begin(o, "counters");
	out_u64(o, "publishes", st->publishes);
	out_u64(o, "skipped_unchanged", st->skipped_unchanged);
	out_u64(o, "deletes", st->deletes);
	out_u64(o, "notifications", st->notifications);
	out_u64(o, "lagged_drops", st->lagged_drops);
	out_u64(o, "worker_mem_bytes", st->worker_mem_bytes);
	out_u64(o, "slow_endpoints", st->slow_endpoints);
	out_u64(o, "observers_added", st->observers_added);
	out_u64(o, "observers_removed", st->observers_removed);
	out_u64(o, "endpoints_attached", st->endpoints_attached);
	out_u64(o, "endpoints_removed", st->endpoints_removed);
	out_u64(o, "cleanup_runs", st->cleanup_runs);
	out_u64(o, "cleanup_removed", st->cleanup_removed);
	out_u64(o, "handoffs", st->handoffs);
	out_u64(o, "reattaches", st->reattaches);
	out_u64(o, "recoveries", s->recoveries);
	out_u64(o, "async_errors", s->async_errors);
	out_obj_end(o);
}

static void
write_gauges(struct out *o, const struct view_stats *s)
{
	const struct hl_stats *st = &s->st;
	out_obj_begin(o, "current");
	out_u64(o, "keys", st->keys);
	out_u64(o, "prefixes", st->prefixes);
	out_u64(o, "observers", st->observers);
	out_u64(o, "endpoints", st->endpoints);
	out_u64(o, "heap_used_bytes", st->heap_used);
	out_u64(o, "heap_capacity_bytes", st->heap_capacity);
	out_u64(o, "revision", st->revision);
	out_u64(o, "epoch", st->epoch);
	out_str(o, "owner_role", view_role_name((uint32_t)st->owner_role));
	out_u64(o, "owner_pid", (uint64_t)st->owner_pid);
	out_bool(o, "worker_ready", s->worker_ready);
	out_dur(o, "last_recovery", st->last_recovery_ns);
	out_u64(o, "last_recovery_repairs", s->last_recovery_repairs);
	out_obj_end(o);
}

/* Bucket i of dispatch_hist (see prom.h for the bounds). */
static void
write_latency(struct out *o, const struct view_stats *s)
{
	const struct hl_stats *st = &s->st;
	uint64_t total = 0;
	out_obj_begin(o, "dispatch_latency");
	out_arr_begin(o, "buckets");
	for (unsigned i = 0; i < PROM_HIST_BUCKETS; i++) {
		out_obj_begin(o, NULL);
		out_u64(o, "from_ns", prom_bucket_lower_ns(i));
		if (i + 1 < PROM_HIST_BUCKETS)
			out_u64(o, "below_ns", prom_bucket_upper_ns(i));
		else
			out_null(o, "below_ns");
		out_u64(o, "count", st->dispatch_hist[i]);
		out_obj_end(o);
		total += st->dispatch_hist[i];
	}
	out_arr_end(o);
	out_u64(o, "count", total);
	out_dur(o, "sum", s->dispatch_sum_ns);
	out_obj_end(o);
}

int
ctl_cmd_stats(struct ctl *c, const struct ctl_args *a)
{
	if (a->set[STATS_PROMETHEUS])
		return ctl_prometheus_stdout(c);
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	struct view_stats s;
	view_stats(&v, &s);
	view_close(&v);
	struct out o;
	out_init(&o, stdout, c->json);
	out_obj_begin(&o, NULL);
	out_str(&o, "name", c->name);
	write_counters(&o, &s);
	write_gauges(&o, &s);
	write_latency(&o, &s);
	out_obj_end(&o);
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}
