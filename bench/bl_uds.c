/* SPDX-License-Identifier: MIT */
/*
 * Baseline "a socket per observer": what the usual design costs, where a
 * publisher holds one Unix domain socket (socketpair, SOCK_SEQPACKET, so one
 * send is one message) to every observer process and writes each message to
 * each socket in turn. Observers block in recv(); each posts its receive
 * time on the ack board, so the figures compare one for one with
 * bl_futex_ring's.
 *
 * Series (scenario/variant):
 *   steady/uds, fanout8/uds, fanout64/uds   latency stamp -> last receive,
 *                                           one message every ~20 us
 *   burst/uds, burst-fanout8/uds, ...64     back to back: msg/s, ev/s
 *
 * This file owns its sockets and consumers; it must never leave a consumer
 * running (see harness.h) nor block without a timeout.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#define RATE_WINDOW_NS (10 * BENCH_NS_PER_MS)
#define MAX_CONSUMERS  64
/* Blocking calls time out this often to look at the stop flag and the
 * deadline; never inside a measurement, which does not wait that long. */
#define POLL_MS           50
#define CONSUMER_GRACE_NS (10 * BENCH_NS_PER_S)

enum msg_kind {
	MSG_DATA = 1, /* count it (burst) */
	MSG_ACK,      /* post the receive time on the board */
	MSG_STOP,     /* the repetition is over: exit 0 */
};

/* The same 64 bytes as bl_futex_ring's record, so only the transport differs. */
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
	{"steady", "uds", 0, 1, 0},
	{"fanout8", "uds", 0, 8, 0},
	{"fanout64", "uds", 0, 64, 0},
	{"burst", "uds", 1, 1, 0},
	{"burst-fanout8", "uds", 1, 8, 0},
	{"burst-fanout64", "uds", 1, 64, 0},
};
/* clang-format on */

static int
set_timeouts(int fd)
{
	struct timeval tv = { 0, POLL_MS * 1000 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

/* A consumer process: returns its exit status (0 after STOP or EOF). */
static int
consume(int fd, struct bench_board *b, uint32_t idx, uint64_t hard_ns)
{
	uint64_t count = 0;
	struct msg m;

	bench_board_ready(b);
	for (;;) {
		ssize_t n = recv(fd, &m, sizeof(m), 0);
		uint64_t now = stats_now_ns();

		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				return 3;
			if (atomic_load_explicit(&b->stop, memory_order_relaxed))
				return 0;
			if (now > hard_ns)
				return 3;
			continue;
		}
		if (n == 0)
			return 0; /* the producer closed its end */
		if (n != sizeof(m))
			return 4;
		if (m.kind == MSG_STOP)
			return 0;
		if (m.kind == MSG_ACK)
			bench_board_ack(b, idx, now);
		/* Relaxed: the producer samples it for rates (see the slot). */
		atomic_store_explicit(&b->slot[idx].count, ++count, memory_order_relaxed);
	}
}

/* Send one message, retrying a full socket until deadline_ns. */
static int
send_msg(int fd, const struct msg *m, uint64_t deadline_ns)
{
	for (;;) {
		ssize_t n = send(fd, m, sizeof(*m), 0);

		if (n == (ssize_t)sizeof(*m))
			return 0;
		if (n >= 0)
			return -EIO; /* SEQPACKET sends all or nothing */
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if (stats_now_ns() > deadline_ns)
			return -ETIMEDOUT;
	}
}

struct producer {
	const int *fds;
	uint32_t n;
	uint64_t deadline;
};

/* bench_send_fn: the message to every consumer's socket in turn. */
static int
send_ack(void *ctx, uint64_t seq, uint64_t stamp)
{
	const struct producer *p = ctx;
	struct msg m = { .seq = seq, .stamp_ns = stamp, .kind = MSG_ACK };

	for (uint32_t c = 0; c < p->n; c++) {
		int err = send_msg(p->fds[c], &m, p->deadline);
		if (err < 0)
			return err;
	}
	return 0;
}

static int
run_burst(const struct bench_scenario *sc, const struct bench_opts *o, const int *fds,
          struct bench_board *b, struct bench_rep_out *out)
{
	uint64_t deadline = bench_rep_deadline(o), seq = 0;
	/* About 64 sends between clock reads (see bl_futex_ring.c). */
	unsigned batch = sc->consumers >= 64 ? 1 : 64 / sc->consumers;
	struct bench_rate rm, re;
	struct msg m = { 0 };
	int err = 0;

	m.kind = MSG_DATA;
	bench_rate_start(&rm, RATE_WINDOW_NS, 0);
	bench_rate_start(&re, RATE_WINDOW_NS, 0);
	bench_cpu_begin(out);
	while (err == 0) {
		uint64_t now = stats_now_ns(), ec;

		if (now > deadline)
			break;
		for (unsigned k = 0; k < batch && err == 0; k++) {
			m.seq = seq++;
			m.stamp_ns = now;
			for (uint32_t c = 0; c < sc->consumers && err == 0; c++)
				err = send_msg(fds[c], &m, deadline);
		}
		ec = bench_board_count(b);
		if (bench_rate_tick(&rm, ec / sc->consumers, &out->msg) < 0 ||
		    bench_rate_tick(&re, ec, &out->ev) < 0)
			err = -ENOMEM;
	}
	bench_cpu_end(out, bench_board_count(b) / sc->consumers);
	/* Running out of time on a full socket is the normal end here. */
	return err == -ETIMEDOUT ? 0 : err;
}

static void
close_all(int *fds, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

static int
run_rep(const struct bench_scenario *sc, const struct bench_opts *o, struct bench_rep_out *out)
{
	int mine[MAX_CONSUMERS], theirs[MAX_CONSUMERS];
	struct bench_board *b;
	struct msg stop = { 0 };
	uint64_t hard;
	int err = 0, failed;

	if (sc->consumers > MAX_CONSUMERS)
		return -EINVAL;
	for (uint32_t c = 0; c < MAX_CONSUMERS; c++)
		mine[c] = theirs[c] = -1;
	b = bench_board_create(sc->consumers);
	if (!b)
		return -errno;
	for (uint32_t c = 0; c < sc->consumers; c++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
			err = -errno;
			goto out_close;
		}
		mine[c] = sv[0];
		theirs[c] = sv[1];
		err = set_timeouts(sv[0]);
		if (err == 0)
			err = set_timeouts(sv[1]);
		if (err < 0)
			goto out_close;
	}
	hard = stats_now_ns() + o->budget_ns + CONSUMER_GRACE_NS;
	for (uint32_t c = 0; c < sc->consumers; c++) {
		pid_t pid = bench_fork();

		if (pid == 0) {
			int fd = theirs[c];

			/* Only its own end: a sibling's or the producer's end
			 * held open here would hide EOF from them. */
			theirs[c] = -1;
			close_all(mine, sc->consumers);
			close_all(theirs, sc->consumers);
			_exit(consume(fd, b, c, hard));
		}
		if (pid < 0) {
			err = -errno;
			goto out_kill;
		}
	}
	close_all(theirs, sc->consumers);
	err = bench_board_wait_ready(b, stats_now_ns() + 5 * BENCH_NS_PER_S);
	if (err < 0)
		goto out_kill;

	if (sc->burst) {
		err = run_burst(sc, o, mine, b, out);
	} else {
		struct producer p = { .fds = mine,
			              .n = sc->consumers,
			              .deadline = bench_rep_deadline(o) + BENCH_NS_PER_S };
		err = bench_steady_run(o, b, 0, send_ack, &p, out);
	}
	if (err < 0)
		goto out_kill;

	stop.kind = MSG_STOP;
	for (uint32_t c = 0; c < sc->consumers; c++) {
		err = send_msg(mine[c], &stop, stats_now_ns() + BENCH_NS_PER_S);
		if (err < 0)
			goto out_kill;
	}
	failed = bench_reap_all(stats_now_ns() + 2 * BENCH_NS_PER_S);
	if (failed > 0) {
		fprintf(stderr, "%s/%s: %d consumer(s) failed\n", sc->name, sc->variant, failed);
		err = -ECHILD;
	}
	goto out_close;
out_kill:
	atomic_store_explicit(&b->stop, 1, memory_order_relaxed);
	bench_kill_all();
out_close:
	close_all(mine, sc->consumers);
	close_all(theirs, sc->consumers);
	bench_board_destroy(b);
	return err;
}

int
main(int argc, char **argv)
{
	struct bench_opts o;

	bench_parse_args(argc, argv, &o);
	return bench_run_all(&o, scenarios, sizeof(scenarios) / sizeof(scenarios[0]), run_rep);
}
