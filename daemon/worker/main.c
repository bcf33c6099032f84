/*
 * main.c: heirloom-worker: options, attach, recovery, serve, stop.
 */
#include "worker.h"

#include "heirloom/heirloom.h"
#include "util.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <urcu/urcu-memb.h>


static void
usage(FILE *f)
{
	fprintf(f,
	        "Usage: heirloom-worker [OPTIONS]\n"
	        "Serve a heirloom table: apply client requests and dispatch notifications.\n"
	        "\n"
	        "  --name NAME            segment name (/heirloom.NAME)            [default]\n"
	        "  --standalone           create/open the segment without a keeper  [off]\n"
	        "  --shards N             shards when creating the segment        [CPUs]\n"
	        "  --max-keys N           key capacity when creating               [65536]\n"
	        "  --max-observers N      observer capacity when creating        [1048576]\n"
	        "  --max-endpoints N      endpoint capacity when creating           [1024]\n"
	        "  --max-value BYTES      largest value when creating               [4096]\n"
	        "  --heap BYTES           value heap size when creating   [max-keys * 1 KiB]\n"
	        "  --req-ring BYTES       request ring per endpoint and shard      [65536]\n"
	        "  --ev-ring BYTES        event ring per endpoint and shard       [262144]\n"
	        "  --mode OCTAL           segment file mode when creating            [0660]\n"
	        "  --prune-interval MS    dead-endpoint sweep period, 0 = off      [30000]\n"
	        "  --spin-us US           busy-poll this long before sleeping         [50]\n"
	        "  -h, --help             this text\n"
	        "  --version              print the version\n"
	        "\n"
	        "Exit status: 0 clean stop, 1 bad usage, 2 cannot get the segment,\n"
	        "3 invariant check failed at stop, 4 fenced (another owner took the table).\n");
}

static struct hl_worker W;

static int
parse(int argc, char **argv, struct hl_worker_opts *o)
{
	enum { O_NAME = 256, O_STANDALONE, O_SHARDS, O_KEYS, O_OBS, O_EPS, O_VALUE, O_HEAP,
	       O_REQ, O_EV, O_MODE, O_PRUNE, O_SPIN, O_CRASH, O_VERSION };
	static const struct option opts[] = {
	        {"name", required_argument, 0, O_NAME},
	        {"standalone", no_argument, 0, O_STANDALONE},
	        {"shards", required_argument, 0, O_SHARDS},
	        {"max-keys", required_argument, 0, O_KEYS},
	        {"max-observers", required_argument, 0, O_OBS},
	        {"max-endpoints", required_argument, 0, O_EPS},
	        {"max-value", required_argument, 0, O_VALUE},
	        {"heap", required_argument, 0, O_HEAP},
	        {"req-ring", required_argument, 0, O_REQ},
	        {"ev-ring", required_argument, 0, O_EV},
	        {"mode", required_argument, 0, O_MODE},
	        {"prune-interval", required_argument, 0, O_PRUNE},
	        {"spin-us", required_argument, 0, O_SPIN},
	        {"crash-at-step", required_argument, 0, O_CRASH},
	        {"help", no_argument, 0, 'h'},
	        {"version", no_argument, 0, O_VERSION},
	        {0, 0, 0, 0},
	};
	o->name = "default";
	o->prune_interval_ms = 30000;
	o->spin_us = 50;
	o->mode = 0660;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end = NULL;
		unsigned long long v = 0;
		if (optarg) {
			errno = 0;
			v = strtoull(optarg, &end, c == O_MODE ? 8 : 0);
			if (c != O_NAME && (errno || end == optarg || *end)) {
				fprintf(stderr, "heirloom-worker: --%s: '%s' is not a number\n",
				        opts[c - O_NAME].name, optarg);
				return 1;
			}
		}
		switch (c) {
		case O_NAME: o->name = optarg; break;
		case O_STANDALONE: o->standalone = 1; break;
		case O_SHARDS: o->shards = (uint32_t)v; break;
		case O_KEYS: o->create.max_keys = (uint32_t)v; break;
		case O_OBS: o->create.max_observers = (uint32_t)v; break;
		case O_EPS: o->create.max_endpoints = (uint32_t)v; break;
		case O_VALUE: o->create.max_value = (uint32_t)v; break;
		case O_HEAP: o->create.heap_bytes = v; break;
		case O_REQ: o->create.req_ring_bytes = (uint32_t)v; break;
		case O_EV: o->create.ev_ring_bytes = (uint32_t)v; break;
		case O_MODE: o->mode = (mode_t)v; break;
		case O_PRUNE: o->prune_interval_ms = (int64_t)v; break;
		case O_SPIN: o->spin_us = (int64_t)v; break;
		case O_CRASH: o->crash_at_step = (int)v; break;
		case 'h': usage(stdout); exit(0);
		case O_VERSION:
			printf("heirloom-worker %d.%d.%d\n", HL_VERSION_MAJOR, HL_VERSION_MINOR,
			       HL_VERSION_PATCH);
			exit(0);
		default:
			fprintf(stderr, "heirloom-worker: see --help\n");
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "heirloom-worker: unexpected argument '%s' (see --help)\n", argv[optind]);
		return 1;
	}
	return 0;
}

static int
setup(struct hl_worker *w)
{
	const struct hl_shm_header *h = w->seg.h;
	int rc = hl__heap_init(&w->heap, h->heap_off, h->heap_bytes, h->heap_chunk);
	if (rc == 0)
		rc = hl__pool_init(&w->keys, h->max_keys);
	if (rc == 0)
		rc = hl__pool_init(&w->obs, h->max_observers);
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
	if (parse(argc, argv, &w->opt))
		return 1;
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
	if (rc) {
		hl_w_log("cannot get segment '%s': %s (%s)", w->opt.name, hl_strerror(rc),
		         hl_err_name(rc));
		return 2;
	}
	rc = setup(w);
	if (rc) {
		hl_w_log("setup failed: %s", hl_strerror(rc));
		return 2;
	}
	rc = hl_w_recover(w);
	if (rc) {
		hl_w_log("recovery failed: %s", hl_strerror(rc));
		return 2;
	}
	atomic_fetch_add_explicit(&w->seg.h->reattaches, 1, memory_order_relaxed);
	if (hl_w_monitor_start(w) || hl_w_shards_start(w)) {
		hl_w_log("cannot start threads");
		return 2;
	}
	hl_w_recover_kill_dead(w);
	atomic_store_explicit(&w->seg.h->worker_ready, 1, memory_order_release);
	hl_w_log("serving /heirloom.%s: epoch %lu, %u shards", w->opt.name,
	         (unsigned long)w->epoch, w->nshards);

	int sig = 0;
	while (!atomic_load(&w->stop)) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig > 0)
			break;
	}
	atomic_store(&w->stop, 1);
	for (uint32_t s = 0; s < w->nshards; s++)
		hl_w_wake_shard(w, s);
	hl_w_monitor_wake(w);
	hl_w_shards_join(w);
	pthread_join(w->monitor, NULL);
	urcu_memb_barrier();
	int fenced = atomic_load(&w->fenced);
	int status = 0;
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
	return status;
}
