/* SPDX-License-Identifier: MIT */
/*
 * Baseline "a broker": Redis pub/sub over a Unix socket, the off-the-shelf
 * way to tell many local processes that something changed. The publisher
 * PUBLISHes a 64-byte payload carrying its stamp; subscriber processes (one
 * connection each, one channel) post their receive time on the ack board.
 * Two hops (publisher -> redis-server -> subscriber) against the ring's one.
 *
 * Series (scenario/variant):
 *   steady/redis, fanout8/redis, fanout64/redis   latency stamp -> last
 *                                                 receive, one PUBLISH
 *                                                 every ~20 us
 *   burst/redis, burst-fanout8/redis              pipelined PUBLISH, at
 *                                                 most MAX_IN_FLIGHT in
 *                                                 flight: msg/s, ev/s
 * The server is not ours: start it first (scripts/bench does, with
 * persistence off) and pass --sock PATH.
 *
 * This file owns its connections and subscribers; it must never leave a
 * subscriber running (see harness.h) nor block without a timeout.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#define RATE_WINDOW_NS    (10 * BENCH_NS_PER_MS)
#define POLL_MS           50
#define CONSUMER_GRACE_NS (10 * BENCH_NS_PER_S)
#define PIPELINE          64
/* Messages a subscriber may lag behind the publisher in burst mode: the
 * ring's capacity. Without a bound the server would queue megabytes in its
 * output buffers and the rate would measure its memory, not delivery. */
#define MAX_IN_FLIGHT 1024u

enum msg_kind {
	MSG_DATA = 1,
	MSG_ACK,
	MSG_STOP,
};

/* The same 64 bytes as bl_futex_ring's record, sent as a binary payload. */
struct msg {
	uint64_t seq;
	uint64_t stamp_ns;
	uint32_t kind;
	uint32_t pad;
	uint64_t payload[5];
};
_Static_assert(sizeof(struct msg) == 64, "same size as the ring record");

/* One scenario a line: the table is read, not formatted. */
/* clang-format off */
static const struct bench_scenario scenarios[] = {
	{"steady", "redis", 0, 1, 0},
	{"fanout8", "redis", 0, 8, 0},
	{"fanout64", "redis", 0, 64, 0},
	{"burst", "redis", 1, 1, 0},
	{"burst-fanout8", "redis", 1, 8, 0},
};
/* clang-format on */

static char channel[64];

static redisContext *
connect_server(const char *sock)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectUnixWithTimeout(sock, tv);

	if (!c)
		return NULL;
	if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/* Next reply from the subscription, or NULL with *stop set when the run is
 * over (stop flag, deadline) or on an error (*stop = 3). Polls so that a
 * silent channel never blocks past POLL_MS. */
static redisReply *
next_reply(redisContext *c, struct bench_board *b, uint64_t hard_ns, int *stop)
{
	for (;;) {
		void *reply = NULL;
		struct pollfd p = { .fd = c->fd, .events = POLLIN };

		if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
			*stop = 3;
			return NULL;
		}
		if (reply)
			return reply;
		if (poll(&p, 1, POLL_MS) == 0) {
			if (atomic_load_explicit(&b->stop, memory_order_relaxed)) {
				*stop = 0;
				return NULL;
			}
			if (stats_now_ns() > hard_ns) {
				*stop = 3;
				return NULL;
			}
			continue;
		}
		if (redisBufferRead(c) != REDIS_OK) {
			*stop = 3;
			return NULL;
		}
	}
}

static int
subscriber(const char *sock, struct bench_board *b, uint32_t idx, uint64_t hard_ns)
{
	redisContext *c = connect_server(sock);
	redisReply *r;
	uint64_t count = 0;
	int status = 3;

	if (!c)
		return 2;
	r = redisCommand(c, "SUBSCRIBE %s", channel);
	if (!r)
		goto out;
	freeReplyObject(r);
	bench_board_ready(b);
	while ((r = next_reply(c, b, hard_ns, &status)) != NULL) {
		uint64_t now = stats_now_ns();
		struct msg m;

		if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
		    r->element[2]->type != REDIS_REPLY_STRING || r->element[2]->len != sizeof(m)) {
			freeReplyObject(r);
			status = 4;
			break;
		}
		memcpy(&m, r->element[2]->str, sizeof(m));
		freeReplyObject(r);
		if (m.kind == MSG_STOP) {
			status = 0;
			break;
		}
		if (m.kind == MSG_ACK)
			bench_board_ack(b, idx, now);
		/* Relaxed: the producer samples it for rates (see the slot). */
		atomic_store_explicit(&b->slot[idx].count, ++count, memory_order_relaxed);
	}
out:
	redisFree(c);
	return status;
}

static int
publish(redisContext *c, const struct msg *m)
{
	redisReply *r = redisCommand(c, "PUBLISH %s %b", channel, (const char *)m, sizeof(*m));

	if (!r)
		return -EIO;
	freeReplyObject(r);
	return 0;
}

/* bench_send_fn: one PUBLISH (a round trip to the server). */
static int
send_ack(void *ctx, uint64_t seq, uint64_t stamp)
{
	struct msg m = { .seq = seq, .stamp_ns = stamp, .kind = MSG_ACK };

	return publish(ctx, &m);
}

static uint64_t
slowest(const struct bench_board *b)
{
	uint64_t min = UINT64_MAX;

	for (uint32_t i = 0; i < b->n; i++) {
		uint64_t v = atomic_load_explicit(&b->slot[i].count, memory_order_relaxed);
		min = v < min ? v : min;
	}
	return min;
}

static int
run_burst(const struct bench_scenario *sc, const struct bench_opts *o, redisContext *c,
          struct bench_board *b, struct bench_rep_out *out)
{
	uint64_t deadline = bench_rep_deadline(o), seq = 0;
	struct bench_rate rm, re;
	struct msg m = { 0 };

	m.kind = MSG_DATA;
	bench_rate_start(&rm, RATE_WINDOW_NS, 0);
	bench_rate_start(&re, RATE_WINDOW_NS, 0);
	bench_cpu_begin(out);
	for (;;) {
		uint64_t now = stats_now_ns(), ec;

		if (now > deadline)
			break;
		if (seq - slowest(b) > MAX_IN_FLIGHT - PIPELINE) {
			/* On 2 cores the server and the subscribers need ours. */
			sched_yield();
		} else {
			for (unsigned k = 0; k < PIPELINE; k++) {
				m.seq = seq++;
				m.stamp_ns = now;
				if (redisAppendCommand(c, "PUBLISH %s %b", channel,
				                       (const char *)&m, sizeof(m)) != REDIS_OK)
					return -EIO;
			}
			for (unsigned k = 0; k < PIPELINE; k++) {
				void *r;

				if (redisGetReply(c, &r) != REDIS_OK)
					return -EIO;
				freeReplyObject(r);
			}
		}
		ec = bench_board_count(b);
		if (bench_rate_tick(&rm, ec / sc->consumers, &out->msg) < 0 ||
		    bench_rate_tick(&re, ec, &out->ev) < 0)
			return -ENOMEM;
	}
	bench_cpu_end(out, bench_board_count(b) / sc->consumers);
	return 0;
}

static int
run_rep(const struct bench_scenario *sc, const struct bench_opts *o, struct bench_rep_out *out)
{
	struct msg stop = { 0 };
	struct bench_board *b;
	redisContext *c;
	uint64_t hard;
	int err = 0, failed;

	b = bench_board_create(sc->consumers);
	if (!b)
		return -errno;
	c = connect_server(o->sock);
	if (!c) {
		err = -ECONNREFUSED;
		goto out_board;
	}
	hard = stats_now_ns() + o->budget_ns + CONSUMER_GRACE_NS;
	for (uint32_t i = 0; i < sc->consumers; i++) {
		pid_t pid = bench_fork();

		if (pid == 0) {
			/* The parent's connection is not ours to use or close. */
			close(c->fd);
			_exit(subscriber(o->sock, b, i, hard));
		}
		if (pid < 0) {
			err = -errno;
			goto out_kill;
		}
	}
	err = bench_board_wait_ready(b, stats_now_ns() + 5 * BENCH_NS_PER_S);
	if (err < 0)
		goto out_kill;

	if (sc->burst)
		err = run_burst(sc, o, c, b, out);
	else
		err = bench_steady_run(o, b, 0, send_ack, c, out);
	if (err < 0)
		goto out_kill;

	stop.kind = MSG_STOP;
	err = publish(c, &stop);
	if (err < 0)
		goto out_kill;
	failed = bench_reap_all(stats_now_ns() + 2 * BENCH_NS_PER_S);
	if (failed > 0) {
		fprintf(stderr, "%s/%s: %d subscriber(s) failed\n", sc->name, sc->variant, failed);
		err = -ECHILD;
	}
	goto out_free;
out_kill:
	atomic_store_explicit(&b->stop, 1, memory_order_relaxed);
	bench_kill_all();
out_free:
	redisFree(c);
out_board:
	bench_board_destroy(b);
	return err;
}

/* The server's CPU counts in every row: find its pid (INFO server). */
static void
watch_server(redisContext *c)
{
	redisReply *r = redisCommand(c, "INFO server");
	const char *p;

	if (r && r->type == REDIS_REPLY_STRING && (p = strstr(r->str, "process_id:")) != NULL)
		bench_cpu_watch((pid_t)strtol(p + strlen("process_id:"), NULL, 10));
	else
		fprintf(stderr,
		        "bl_redis: no process_id from the server: its CPU is not counted\n");
	if (r)
		freeReplyObject(r);
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	redisContext *c;

	bench_parse_args(argc, argv, &o);
	if (!o.sock) {
		fprintf(stderr, "%s: --sock PATH (the redis-server's unixsocket) is required\n",
		        argv[0]);
		return 2;
	}
	/* Say once, clearly, that the server is missing, rather than failing
	 * every scenario in turn. */
	c = connect_server(o.sock);
	if (!c) {
		fprintf(stderr, "%s: cannot connect to redis at %s\n", argv[0], o.sock);
		return 2;
	}
	watch_server(c);
	redisFree(c);
	snprintf(channel, sizeof(channel), "hl-bench-%ld", (long)getpid());
	return bench_run_all(&o, scenarios, sizeof(scenarios) / sizeof(scenarios[0]), run_rep);
}
