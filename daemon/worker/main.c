/*
 * main.c: heirloom-worker: options, attach, recovery, serve, stop.
 */
#include "worker.h"

#include "config.h"
#include "heirloom/heirloom.h"
#include "util.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
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
        "Exit status: 0 clean stop, 1 bad usage or configuration, 2 cannot get the\n"
        "segment, 3 invariant check failed at stop, 4 fenced (another owner took\n"
        "the table).";

static struct hl_worker W;

/* Option values as the config module writes them (its types), turned into
 * struct hl_worker_opts by parse(). */
static struct {
	bool standalone, print_config;
	char *socket;
	int64_t shards, max_keys, max_observers, max_endpoints, max_value, heap, req_ring, ev_ring;
	unsigned mode;
	int64_t prune_ms, slow_ms, telemetry_ms, spin_us, crash_at_step, rec_pause_ms;
	int64_t park_shard;
} V;

/* One option: name, type, default, help, bounds, variable. */
#define WOPT(n_, t_, d_, h_, lo_, hi_, dst_)                                                       \
	(struct hl_cfg_opt)                                                                        \
	{                                                                                          \
		.name = (n_), .type = (t_), .def = (d_), .help = (h_), .min = (lo_), .max = (hi_), \
		.dst = (dst_)                                                                      \
	}

static size_t
options(struct hl_cfg_opt *o)
{
	size_t i = 0;
	o[i++] = WOPT("standalone", HL_CFG_BOOL, "false",
	              "Create or open the segment without a keeper (tests, no supervision).", 0, 0,
	              &V.standalone);
	o[i++] = (struct hl_cfg_opt){ .name = "socket",
		                      .type = HL_CFG_STR,
		                      .metavar = "PATH",
		                      .help = "The keeper's control socket (default: see above).",
		                      .dst = &V.socket };
	o[i++] = WOPT("shards", HL_CFG_INT, "0", "Shards of a new segment (0 = number of CPUs).", 0,
	              HL_SHARDS_MAX, &V.shards);
	o[i++] = WOPT("max-keys", HL_CFG_INT, "65536", "Key capacity of a new segment.", 1, 1 << 24,
	              &V.max_keys);
	o[i++] = WOPT("max-observers", HL_CFG_INT, "1048576", "Observer capacity of a new segment.",
	              1, 1 << 24, &V.max_observers);
	o[i++] = WOPT("max-endpoints", HL_CFG_INT, "1024",
	              "Client endpoint capacity of a new segment.", 1, 65536, &V.max_endpoints);
	o[i++] = WOPT("max-value", HL_CFG_SIZE, "4096", "Largest value in a new segment.", 0,
	              HL_VALUE_MAX_LIMIT, &V.max_value);
	o[i++] = WOPT("heap", HL_CFG_SIZE, "0",
	              "Value heap of a new segment (0 = max-keys x 1 KiB).", 0, 1ll << 40, &V.heap);
	o[i++] = WOPT("req-ring", HL_CFG_SIZE, "0",
	              "Request ring per endpoint and shard, a power of two (0 = 64 KiB or what "
	              "max-value needs).",
	              0, 1 << 30, &V.req_ring);
	o[i++] = WOPT("ev-ring", HL_CFG_SIZE, "0",
	              "Event ring per endpoint and shard, a power of two (0 = 256 KiB or what "
	              "max-value needs).",
	              0, 1 << 30, &V.ev_ring);
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
	              0, 3600 * 1000, &V.telemetry_ms);
	o[i++] = WOPT("spin-us", HL_CFG_INT, "50",
	              "Busy-poll this many microseconds before a shard thread sleeps.", 0, 1000000,
	              &V.spin_us);
	o[i++] = WOPT("crash-at-step", HL_CFG_INT, "0",
	              "Test hook: exit 99 at the N-th apply step (0 = off).", 0, INT32_MAX,
	              &V.crash_at_step);
	o[i++] = WOPT("recovery-pause", HL_CFG_MS, "0",
	              "Test hook: the second part of recovery (observer lists) waits this long "
	              "while publishes are served (0 = off).",
	              0, 60 * 1000, &V.rec_pause_ms);
	o[i++] = WOPT("park-shard", HL_CFG_INT, "-1",
	              "Test hook: shard thread N hangs at start (serves and beats nothing) "
	              "while the others serve (-1 = off).",
	              -1, HL_SHARDS_MAX - 1, &V.park_shard);
	o[i++] = WOPT("print-config", HL_CFG_BOOL, "false",
	              "Print every option's value and where it came from, then exit 0.", 0, 0,
	              &V.print_config);
	return i;
}

/* Resolve the options (flag > HEIRLOOM_* > config file > default) into
 * w->opt. Returns -1 to go on, else the exit status (0 after --help,
 * --version or --print-config; 1 for a bad option, variable or file). On
 * -1 the strings in w->opt point into *cfg: free it after the worker stops. */
static int
parse(int argc, char **argv, struct hl_cfg *cfg, struct hl_worker_opts *o)
{
	static struct hl_cfg_opt opts[24];
	static const char *const foreign[] = { "keeper", "ctl", NULL };
	char err[512];
	*cfg = (struct hl_cfg){ .prog = "heirloom-worker",
		                .version = VERSION_TEXT,
		                .summary = summary,
		                .section = "worker",
		                .foreign = foreign,
		                .opts = opts,
		                .nopts = options(opts) };
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
		                               .heap_bytes = (uint64_t)V.heap };
	o->mode = (mode_t)V.mode;
	o->prune_interval_ms = V.prune_ms;
	o->slow_reader_ms = V.slow_ms;
	o->telemetry_ms = V.telemetry_ms;
	o->spin_us = V.spin_us;
	o->crash_at_step = (int)V.crash_at_step;
	o->recovery_pause_ms = V.rec_pause_ms;
	o->park_shard = V.park_shard;
	return -1;
}

static int
setup(struct hl_worker *w)
{
	const struct hl_shm_header *h = w->seg.h;
	int rc = hl__heap_init(&w->heap, h->heap_off, h->heap_bytes, h->heap_chunk);
	if (rc == 0)
		rc = hl__pool_init(&w->keys, h->max_keys);
	if (rc == 0)
		rc = hl__pool_init_unfilled(&w->obs, h->max_observers); /* recovery fills it */
	if (rc)
		return rc;
	w->obs_pos = calloc((size_t)h->max_observers + 1, sizeof(uint32_t));
	w->eps = calloc(h->max_endpoints, sizeof(struct hl_ep));
	w->nshards = h->shards;
	w->shards = calloc(w->nshards, sizeof(struct hl_shard));
	if (!w->obs_pos || !w->eps || !w->shards)
		return -ENOMEM;
	for (uint32_t e = 0; e < h->max_endpoints; e++) {
		pthread_mutex_init(&w->eps[e].mu, NULL);
		w->eps[e].pidfd = -1;
	}
	for (uint32_t s = 0; s < w->nshards; s++) {
		w->shards[s].w = w;
		w->shards[s].id = s;
		rc = hl_w_shard_init(&w->shards[s]);
		if (rc)
			return rc;
	}
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->epfd < 0 || w->wakefd < 0)
		return -errno;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev);
	return 0;
}

int
main(int argc, char **argv)
{
	struct hl_worker *w = &W;
	static struct hl_cfg cfg; /* static: its strings stay reachable until exit */
	int st = parse(argc, argv, &cfg, &w->opt);
	if (st >= 0)
		return st;
	/* Signals are taken synchronously by the main thread (sigwait): block
	 * them before any thread starts so that every thread inherits it. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	urcu_memb_register_thread();
	int rc = hl_w_acquire(w);
	if (rc == -EINTR)
		return 0; /* stopped while waiting for the keeper: nothing to give back */
	if (rc) {
		hl_w_log("cannot get segment '%s': %s (%s)", w->opt.name, hl_strerror(rc),
		         hl_err_name(rc));
		return 2;
	}
	/* Heartbeats start now: recovery counts as this worker's first
	 * pause, and a previous worker's beats never count (liveness.c). */
	hl_w_beats_reset(w);
	hl_w_notify_init();
	rc = setup(w);
	if (rc) {
		hl_w_log("setup failed: %s", hl_strerror(rc));
		return 2;
	}
	/* Recovery, part 1: keys, values, endpoints, pending dispatches.
	 * Publishes can be served after it; the monitor thread runs part 2
	 * (the observer lists) first thing, and then sets worker_ready
	 * (recovery.c, endpoint.c). */
	rc = hl_w_recover_begin(w);
	if (rc) {
		hl_w_log("recovery failed: %s", hl_strerror(rc));
		return 2;
	}
	atomic_fetch_add_explicit(&w->seg.h->reattaches, 1, memory_order_relaxed);
	hl_w_telemetry_init(w);
	hl_w_recover_kick(w);
	if (hl_w_monitor_start(w)) {
		hl_w_log("cannot start threads");
		return 2;
	}
	if (hl_w_shards_start(w)) {
		hl_w_log("cannot start threads");
		return 2;
	}
	hl_w_log("serving /heirloom.%s: epoch %lu, %u shards", w->opt.name,
	         (unsigned long)w->epoch, w->nshards);

	int sig = 0;
	const int tick_ms = hl_w_notify_tick_ms(200);
	while (!atomic_load(&w->stop)) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = tick_ms * 1000000L };
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig > 0)
			break;
		hl_w_notify_tick(w);
	}
	atomic_store(&w->stop, 1);
	for (uint32_t s = 0; s < w->nshards; s++)
		hl_w_wake_shard(w, s);
	hl_w_monitor_wake(w);
	hl_w_shards_join(w);
	pthread_join(w->monitor, NULL);
	/* A fenced worker's heartbeat words are another worker's now. */
	if (!atomic_load(&w->fenced))
		hl_w_beats_stop(w);
	urcu_memb_barrier();
	int fenced = atomic_load(&w->fenced);
	int status = 0;
	if (atomic_load(&w->rec_failed)) {
		/* Part 2 of recovery failed (logged): nothing to check, and
		 * nothing to give back cleanly; the next worker recovers. */
		hl__cfg_free(&cfg);
		return 2;
	}
	if (fenced) {
		hl_w_log("fenced: the table has another owner now (epoch %lu); stopping",
		         (unsigned long)atomic_load(&w->seg.h->owner_epoch));
		status = 4;
	} else {
		atomic_store_explicit(&w->seg.h->worker_ready, 0, memory_order_release);
		char msg[256];
		if (hl_w_check(w, msg, sizeof(msg)) != 0) {
			hl_w_log("invariant check FAILED at stop: %s", msg);
			status = 3;
		} else {
			hl_w_log("invariant check at stop: %s", msg);
		}
		hl_w_release(w, 1);
	}
	hl_w_log("stopped (%s)", sig > 0 ? strsignal(sig) : fenced ? "fenced" : "stop");
	hl__cfg_free(&cfg);
	return status;
}
