/* SPDX-License-Identifier: MIT */
/*
 * main.c: heirloom-worker: options, attach, recovery, serve, stop.
 */
#include "worker.h"

#include "config.h"
#include "handoff.h"
#include "heirloom/heirloom.h"
#include "liveness.h"
#include "recovery.h"
#include "resources.h"
#include "util.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define STR_(x)      #x
#define STR(x)       STR_(x)
#define VERSION_TEXT STR(HL_VERSION_MAJOR) "." STR(HL_VERSION_MINOR) "." STR(HL_VERSION_PATCH)

static const char summary[] =
        "Serve a heirloom table: apply client requests and dispatch notifications.\n"
        "Without --standalone the worker asks the keeper for the table over the\n"
        "control socket: --socket, else $RUNTIME_DIRECTORY, /run/heirloom (root),\n"
        "$XDG_RUNTIME_DIR or /tmp/heirloom-$UID, + /heirloom-NAME.sock.\n"
        "Capacity options (shards ... ev-ring, mode) apply only when --standalone\n"
        "creates the segment.\n"
        "\n"
        "Every byte of a new segment is reserved in /dev/shm at creation: the\n"
        "defaults make about 24 MiB with 2 shards, 30 MiB with 4. Size = ~20 KiB +\n"
        "keys x 328 B + observers x 64 B + heap (default keys x 512 B) + endpoints\n"
        "x (8 KiB + shards x (req-ring + ev-ring)); 'heirloomctl size' prints it.\n"
        "The soft RLIMIT_NOFILE is raised to the hard one: one pidfd per client.\n"
        "\n"
        "Exit status: 0 clean stop, 1 bad usage or configuration, 2 cannot get the\n"
        "segment, 3 invariant check failed at stop, 4 fenced (another owner took\n"
        "the table), 5 /dev/shm has not enough free space for the segment, 6 the\n"
        "segment was truncated or replaced while served.";

static struct hl_worker W;

/* Option values as the config module writes them (its types), turned into
 * struct hl_worker_opts by parse(). */
struct wvals {
	bool standalone, print_config, busy_poll;
	char *socket;
	int64_t shards, max_keys, max_observers, max_endpoints, max_value, heap, req_ring, ev_ring,
	        history;
	unsigned mode;
	int64_t prune_ms, slow_ms, telemetry_ms, spin_us, crash_at_step, rec_pause_ms;
	int64_t park_shard, hold_shard;
	char *hold_file;
	char *log_level, *log_format; /* log.h's words; SIGHUP reloads them */
};
static struct wvals V;

/* One option: name, type, default, help, bounds, variable. */
#define WOPT(n_, t_, d_, h_, lo_, hi_, dst_)                                                       \
	(struct hl_cfg_opt)                                                                        \
	{                                                                                          \
		.name = (n_), .type = (t_), .def = (d_), .help = (h_), .min = (lo_), .max = (hi_), \
		.dst = (dst_)                                                                      \
	}

/* The options, writing into V (the worker's, or a scratch copy when SIGHUP
 * reloads). */
static size_t
options(struct hl_cfg_opt *o, struct wvals *v)
{
#define V (*v) /* the table reads as if it wrote the global */
	size_t i = 0;
	o[i++] = WOPT("standalone", HL_CFG_BOOL, "false",
	              "Create or open the segment without a keeper (tests, no supervision).", 0, 0,
	              &V.standalone);
	o[i++] = (struct hl_cfg_opt){ .name = "socket",
		                      .type = HL_CFG_STR,
		                      .metavar = "PATH",
		                      .help = "The keeper's control socket (default: see above).",
		                      .dst = &V.socket };
	o[i++] = WOPT("shards", HL_CFG_INT, "0",
	              "Shards of a new segment (0 = number of CPUs, at most " STR(
	                      HL_DEF_SHARDS_MAX) "); each adds rings to every endpoint.",
	              0, HL_SHARDS_MAX, &V.shards);
	o[i++] = WOPT("max-keys", HL_CFG_INT, STR(HL_DEF_KEYS),
	              "Key capacity of a new segment (328 B each, plus heap).", 1, 1 << 24,
	              &V.max_keys);
	o[i++] = WOPT("max-observers", HL_CFG_INT, STR(HL_DEF_OBSERVERS),
	              "Observer capacity of a new segment (64 B each).", 1, 1 << 24,
	              &V.max_observers);
	o[i++] = WOPT("max-endpoints", HL_CFG_INT, STR(HL_DEF_ENDPOINTS),
	              "Client endpoint capacity of a new segment: processes attached at once "
	              "(8 KiB + shards x (req-ring + ev-ring) each).",
	              1, 65536, &V.max_endpoints);
	o[i++] = WOPT("max-value", HL_CFG_SIZE, "4096", "Largest value in a new segment.", 0,
	              HL_VALUE_MAX_LIMIT, &V.max_value);
	o[i++] =
	        WOPT("heap", HL_CFG_SIZE, "0",
	             "Value heap of a new segment (0 = max-keys x " STR(HL_DEF_HEAP_PER_KEY) " B).",
	             0, 1ll << 40, &V.heap);
	o[i++] = WOPT("req-ring", HL_CFG_SIZE, "0",
	              "Request ring per endpoint and shard, a power of two (0 = 16 KiB or what "
	              "max-value needs).",
	              0, 1 << 30, &V.req_ring);
	o[i++] = WOPT("ev-ring", HL_CFG_SIZE, "0",
	              "Event ring per endpoint and shard, a power of two (0 = 32 KiB or what "
	              "max-value needs).",
	              0, 1 << 30, &V.ev_ring);
	o[i++] = WOPT("history", HL_CFG_SIZE, "0",
	              "History ring per shard of a new segment, a power of two (0 = 1 MiB or "
	              "what max-value needs): how far back observers can resume and catch up.",
	              0, 1 << 30, &V.history);
	o[i++] = WOPT("mode", HL_CFG_MODE, "0660", "File mode of a new segment.", 0, 0, &V.mode);
	o[i++] = WOPT("prune-interval", HL_CFG_MS, "30s",
	              "Period of the sweep for endpoints whose process is gone, missed by the "
	              "pidfd watch (0 = only at start).",
	              0, 24ll * 3600 * 1000, &V.prune_ms);
	o[i++] = WOPT("slow-reader-ms", HL_CFG_MS, "10000",
	              "Report an endpoint whose events wait unread this long (it keeps its "
	              "observers; 0 = never).",
	              0, 24ll * 3600 * 1000, &V.slow_ms);
	o[i++] = WOPT("telemetry-interval", HL_CFG_MS, "100ms",
	              "Publish the $sys/telemetry/* keys at most this often, while observed "
	              "(0 = never).",
	              0, 3600 * 1000LL, &V.telemetry_ms);
	o[i++] = WOPT("spin-us", HL_CFG_INT, "50",
	              "Longest busy-poll of an idle shard thread before it sleeps; it polls only "
	              "while its recent idle gaps predict a request that soon (0 = never).",
	              0, 1000000, &V.spin_us);
	o[i++] = WOPT("busy-poll", HL_CFG_BOOL, "false",
	              "Shard threads never sleep: each keeps a core busy (yielding it to any "
	              "other runnable thread) for the lowest latency.",
	              0, 0, &V.busy_poll);
	o[i++] = WOPT("crash-at-step", HL_CFG_INT, "0",
	              "Test hook: exit 99 at the N-th apply step (0 = off).", 0, INT32_MAX,
	              &V.crash_at_step);
	o[i++] = WOPT("recovery-pause", HL_CFG_MS, "0",
	              "Test hook: the second part of recovery (observer lists) waits this long "
	              "while publishes are served (0 = off).",
	              0, 60 * 1000LL, &V.rec_pause_ms);
	o[i++] = WOPT("park-shard", HL_CFG_INT, "-1",
	              "Test hook: shard thread N hangs at start (serves and beats nothing) "
	              "while the others serve (-1 = off).",
	              -1, HL_SHARDS_MAX - 1, &V.park_shard);
	o[i++] = WOPT("hold-dispatch-shard", HL_CFG_INT, "-1",
	              "Test hook: shard thread N, after each commit of a client's change and "
	              "before its dispatch, waits while --hold-dispatch-file exists (-1 = off).",
	              -1, HL_SHARDS_MAX - 1, &V.hold_shard);
	o[i++] = (struct hl_cfg_opt){ .name = "hold-dispatch-file",
		                      .type = HL_CFG_STR,
		                      .metavar = "PATH",
		                      .help = "Test hook: the file --hold-dispatch-shard waits on.",
		                      .dst = &V.hold_file };
	o[i++] = WOPT("print-config", HL_CFG_BOOL, "false",
	              "Print every option's value and where it came from, then exit 0.", 0, 0,
	              &V.print_config);
	i += hl__log_cfg_opts(&o[i], &V.log_level, &V.log_format);
	return i;
#undef V
}

/* What parse() loaded from, for reload(). */
static struct {
	int argc;
	char **argv;
	struct hl_cfg cfg;
} loaded;

/*
 * SIGHUP, in the main thread while the others serve: load the
 * configuration again (same flags, environment and file rule) into a
 * scratch copy and apply what can change while serving: the log level and
 * format. Everything else applies at the next start. A bad file is logged
 * and changes nothing; the worker never stops for it.
 */
static void
reload(void)
{
	static struct hl_cfg_opt opts[32];
	struct wvals scratch = { 0 };
	struct hl_cfg c = loaded.cfg;
	char err[512];
	c.opts = opts;
	c.nopts = options(opts, &scratch);
	if (hl__cfg_load(&c, loaded.argc, loaded.argv, err, sizeof(err)) < 0) {
		hl__log_err("SIGHUP: configuration not reloaded, nothing changed: %s", err);
		return;
	}
	hl__log_configure(scratch.log_level, scratch.log_format);
	hl__log("SIGHUP: reloaded %s: log level %s (other options apply at the next start)",
	        c.config_file ? c.config_file : "(no config file)", hl__log_level_name());
	hl__cfg_free(&c);
}

/* Resolve the options (flag > HEIRLOOM_* > config file > default) into
 * w->opt. Returns -1 to go on, else the exit status (0 after --help,
 * --version or --print-config; 1 for a bad option, variable or file). On
 * -1 the strings in w->opt point into *cfg: free it after the worker stops. */
static int
parse(int argc, char **argv, struct hl_cfg *cfg, struct hl_worker_opts *o)
{
	static struct hl_cfg_opt opts[32];
	static const char *const foreign[] = { "keeper", "ctl", NULL };
	char err[512];
	*cfg = (struct hl_cfg){ .prog = "heirloom-worker",
		                .version = VERSION_TEXT,
		                .summary = summary,
		                .section = "worker",
		                .foreign = foreign,
		                .shared_names = hl__daemon_option_names,
		                .opts = opts,
		                .nopts = options(opts, &V) };
	loaded.cfg = *cfg; /* the inputs only, for reload() */
	loaded.argc = argc;
	loaded.argv = argv;
	if (hl__cfg_load(cfg, argc, argv, err, sizeof(err)) < 0) {
		fprintf(stderr, "heirloom-worker: %s\n", err);
		return 1;
	}
	if (cfg->request != HL_CFG_RUN) {
		hl__cfg_free(cfg);
		return 0;
	}
	if (cfg->argind < argc) {
		fprintf(stderr, "heirloom-worker: unexpected argument '%s' (see --help)\n",
		        argv[cfg->argind]);
		hl__cfg_free(cfg);
		return 1;
	}
	if (V.print_config) {
		hl__cfg_dump(cfg, stdout);
		hl__cfg_free(cfg);
		return 0;
	}
	hl__log_configure(V.log_level, V.log_format);
	hl__log_debug("configuration: %s", cfg->config_file ? cfg->config_file : "(no file)");
	o->name = cfg->name;
	o->standalone = V.standalone;
	o->socket_path = V.socket;
	o->shards = (uint32_t)V.shards;
	o->create = (struct hl_layout_params){ .max_keys = (uint32_t)V.max_keys,
		                               .max_observers = (uint32_t)V.max_observers,
		                               .max_endpoints = (uint32_t)V.max_endpoints,
		                               .max_value = (uint32_t)V.max_value,
		                               .req_ring_bytes = (uint32_t)V.req_ring,
		                               .ev_ring_bytes = (uint32_t)V.ev_ring,
		                               .hist_bytes = (uint32_t)V.history,
		                               .heap_bytes = (uint64_t)V.heap };
	o->mode = (mode_t)V.mode;
	o->prune_interval_ms = V.prune_ms;
	o->slow_reader_ms = V.slow_ms;
	o->telemetry_ms = V.telemetry_ms;
	o->spin_us = V.spin_us;
	o->busy_poll = V.busy_poll;
	o->crash_at_step = (int)V.crash_at_step;
	o->recovery_pause_ms = V.rec_pause_ms;
	o->park_shard = V.park_shard;
	o->hold_shard = V.hold_file ? V.hold_shard : -1;
	o->hold_file = V.hold_file;
	return -1;
}

/* A page of the segment that is gone (the object was truncated) faults
 * with SIGBUS: one line and exit 6 (resources.h), so that the keeper knows
 * not to restart against it. */
static void
catch_sigbus(struct hl_worker *w)
{
	char msg[256];
	size_t len = hl__log_line(msg, sizeof(msg), HL_LOG_ERR,
	                          "SIGBUS on segment /heirloom.%s: it was truncated while "
	                          "served; stopping (exit 6), it cannot be served again",
	                          w->opt.name);
	hl__seg_sigbus_exit(w->seg.base, w->seg.size, msg, len);
}

/* Say how many clients the worker can watch with a pidfd each: the
 * descriptor limit less its own needs. Clients beyond are still served,
 * watched by polling (endpoint.c), never dropped. */
static void
report_nofile(struct hl_worker *w, uint64_t nofile)
{
	struct hl_shm_header *h = w->seg.h;
	uint64_t cap = nofile > HL_OWN_FDS ? nofile - HL_OWN_FDS : 0;
	atomic_store_explicit(&h->nofile_limit, nofile, memory_order_relaxed);
	atomic_store_explicit(&h->pidfd_capacity, cap, memory_order_relaxed);
	if (cap < h->max_endpoints)
		hl__log_warn(
		        "RLIMIT_NOFILE is %llu: %llu of the segment's %u endpoints can be watched "
		        "with a pidfd; the others are watched by polling (raise LimitNOFILE / "
		        "ulimit -Hn to at least %u)",
		        (unsigned long long)nofile, (unsigned long long)cap, h->max_endpoints,
		        h->max_endpoints + HL_OWN_FDS);
	else
		hl__log("RLIMIT_NOFILE is %llu: all %u endpoints can be watched with a pidfd",
		        (unsigned long long)nofile, h->max_endpoints);
}

int
main(int argc, char **argv)
{
	struct hl_worker *w = &W;
	static struct hl_cfg cfg; /* static: its strings stay reachable until exit */
	hl__log_init("heirloom-worker");
	int st = parse(argc, argv, &cfg, &w->opt);
	if (st >= 0)
		return st;
	/* Signals are taken synchronously by the main thread (sigwait): block
	 * them before any thread starts so that every thread inherits it. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);  /* reload(), never a stop */
	sigaddset(&set, SIGUSR1); /* the link thread's YIELD (handoff.c) */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	urcu_memb_register_thread();
	uint64_t nofile = hl__nofile_raise();
	int rc = hl_w_acquire(w);
	if (rc == -EINTR)
		return 0; /* stopped while waiting for the keeper: nothing to give back */
	if (rc == -ENOSPC)
		return HL_EXIT_NOSPACE; /* logged with the sizes by hl_w_acquire() */
	if (rc) {
		hl__log_err("cannot get segment '%s': %s (%s)", w->opt.name, hl_strerror(rc),
		            hl_err_name(rc));
		return 2;
	}
	report_nofile(w, nofile);
	catch_sigbus(w);
	/* Heartbeats start now: recovery counts as this worker's first
	 * pause, and a previous worker's beats never count (liveness.c). */
	hl_w_beats_reset(w);
	hl_w_notify_init();
	rc = hl_w_init(w);
	if (rc) {
		hl__log_err("setup failed: %s", hl_strerror(rc));
		return 2;
	}
	/* Recovery, part 1: keys, values, endpoints, pending dispatches.
	 * Publishes can be served after it; the monitor thread runs part 2
	 * (the observer lists) first thing, and then sets worker_ready
	 * (worker.c, monitor.c). */
	if (hl_w_start(w))
		return 2; /* logged */
	hl__log("serving /heirloom.%s: epoch %lu, %u shards", w->opt.name, (unsigned long)w->epoch,
	        w->nshards);

	int sig = 0;
	const int tick_ms = hl_w_notify_tick_ms(200);
	while (!atomic_load(&w->stop)) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = tick_ms * 1000000L };
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGHUP) {
			reload();
			sig = 0;
			continue;
		}
		if (sig == SIGUSR1 && !atomic_load(&w->yield))
			continue; /* not from our link thread */
		if (sig > 0)
			break;
		hl_w_notify_tick(w);
	}
	hl_w_stop(w);
	/* A fenced worker's heartbeat words are another worker's now. */
	if (!atomic_load(&w->fenced))
		hl_w_beats_stop(w);
	int fenced = atomic_load(&w->fenced);
	int status = 0;
	if (atomic_load(&w->damaged)) {
		/* Logged by the monitor. Nothing to check (pages are gone) and
		 * nothing to give back: the keeper sees the exit and the
		 * damage for itself. */
		hl__log_err("stopped (segment damaged)");
		hl__cfg_free(&cfg);
		return HL_EXIT_DAMAGED;
	}
	if (atomic_load(&w->rec_failed)) {
		/* Part 2 of recovery failed (logged): nothing to check, and
		 * nothing to give back cleanly; the next worker recovers. */
		hl__cfg_free(&cfg);
		return 2;
	}
	if (!fenced && atomic_load(&w->yield) && sig == SIGUSR1) {
		/* An upgrade: every thread finished its batch and is joined.
		 * No invariant check here: it walks the whole table, and
		 * every millisecond of it would be a millisecond nobody's
		 * event is dispatched; the new worker's recovery checks what
		 * it reads. Nor hl_w_drain_deferred(), for the same reason
		 * (it cost 10 ms of the pause to a worker that had ever freed
		 * a slot): the deferred frees touch only this process's pools,
		 * which nobody uses after this. worker_ready stays: the keeper
		 * clears it when it writes the new owner. */
		enum hl_w_after after = hl_w_handover(w);
		if (after == HL_W_AFTER_REEXEC) {
			hl__seg_unmap(&w->seg);
			hl_w_reexec(argv);
			return 2;
		}
		hl__log("stopped (upgraded)");
		hl__cfg_free(&cfg);
		return 0;
	}
	hl_w_drain_deferred(w);
	if (fenced) {
		hl__log_err("fenced: the table has another owner now (epoch %lu); stopping",
		            (unsigned long)atomic_load(&w->seg.h->owner_epoch));
		status = 4;
	} else {
		atomic_store_explicit(&w->seg.h->worker_ready, 0, memory_order_release);
		char msg[256];
		if (hl_w_check(w, msg, sizeof(msg)) != 0) {
			hl__log_err("invariant check FAILED at stop: %s", msg);
			status = 3;
		} else {
			hl__log("invariant check at stop: %s", msg);
		}
		hl_w_release(w, 1);
	}
	hl__log("stopped (%s)", sig > 0 ? strsignal(sig) : fenced ? "fenced" : "stop");
	hl__cfg_free(&cfg);
	return status;
}
