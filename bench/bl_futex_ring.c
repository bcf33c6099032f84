/* SPDX-License-Identifier: MIT */
/*
 * Baseline "one hop": the least any cross-process notification can cost on
 * this machine. A producer process writes a stamped 64-byte record into a
 * single-producer single-consumer ring in a MAP_SHARED anonymous mapping;
 * each consumer process (forked) takes it and posts its receive time on the
 * ack board. Nothing heirloom does (tables, keys, a worker hop) is here, so
 * a heirloom scenario slower than this by a small factor is near the floor.
 *
 * The relay (issue 16) is the same thing twice: the producer's ring goes to
 * a relay process, which copies each record into one ring per consumer.
 * Heirloom has two hops by design (publisher -> worker -> observer), so
 * this is its fair yardstick: the least two hops can cost here.
 *
 * Series (scenario/variant):
 *   steady/ring-futex, steady/ring-spin   one consumer, paced (harness.h,
 *                                          bench_steady_run), latency stamp
 *                                          -> receive
 *   steady/relay-futex                     producer -> relay -> consumer, both
 *                                          hops futex rings, both sleep
 *   steady/relay-spin                      the same, the relay busy-polls
 *                                          (the consumer sleeps)
 *   fanout8/ring-futex, fanout64/...       N consumers, one ring each, every
 *                                          message to all; latency to the last
 *   fanout8/relay-futex, fanout64/...      through the relay, which writes
 *                                          the N rings and rings each doorbell
 *   burst/ring-futex, burst/ring-spin      back to back: msg/s per 10 ms window
 *   burst/relay-futex                      the same through the relay
 *   burst-fanout8/..., burst-fanout64/...  the same to N rings: msg/s, ev/s
 * Spinning fan-out is left out: with more spinners than the 2 cores, it
 * measures the scheduler's time slice, not the mechanism.
 *
 * This file owns its rings and consumers; it must never leave a consumer
 * running (see harness.h) nor let a busy loop run past its deadline.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#define RING_SLOTS     1024u /* power of two: index = seq & (RING_SLOTS - 1) */
#define RATE_WINDOW_NS (10 * BENCH_NS_PER_MS)
/* A consumer blocked in futex_wait looks at the stop flag this often. */
#define CONSUMER_POLL_NS (50 * BENCH_NS_PER_MS)
/* How long consumers outlive the repetition's deadline before giving up on
 * their producer: past the reap deadline, so they never exit by it first. */
#define CONSUMER_GRACE_NS  (10 * BENCH_NS_PER_S)
#define SPINS_BEFORE_YIELD 256
#define CHILD_CHECK_NS     (20 * BENCH_NS_PER_MS)
/* Records a burst producer pushes to one ring before its doorbell. Far
 * below RING_SLOTS, so a sleeping consumer (whose ring is empty) is always
 * rung before its ring can fill. */
#define BURST_BATCH 64u
_Static_assert(BURST_BATCH < RING_SLOTS, "a batch must fit an empty ring");

enum rec_kind {
	REC_DATA = 1, /* count it (burst) */
	REC_ACK,      /* post the receive time on the board (steady, fan-out) */
	REC_STOP,     /* the repetition is over: exit 0 */
};

/* One message. The producer writes it before the release store of head and
 * never rewrites it until the consumer's tail has passed it. */
struct rec {
	uint64_t seq;      /* position in the ring; checked by the consumer */
	uint64_t stamp_ns; /* producer's stats_now_ns() just before the first push */
	uint32_t kind;     /* enum rec_kind */
	uint32_t pad;
	uint64_t payload[5]; /* stands in for a small value; not read */
};
_Static_assert(sizeof(struct rec) == 64, "one record per cache line");

struct ring {
	/* Records published. Producer stores (release) after writing the record;
	 * consumer loads (acquire) before reading it. */
	_Alignas(64) _Atomic uint64_t head;
	/* Records consumed. Consumer stores (release) after reading them;
	 * producer loads (acquire) before reusing a slot, and for rates. */
	_Alignas(64) _Atomic uint64_t tail;
	/* The doorbell, futex variant only. The consumer stores sleeping = 1,
	 * fences (seq_cst), rechecks head, and futex-waits on wake; the producer
	 * stores head, fences (seq_cst), and if it sees sleeping bumps wake and
	 * FUTEX_WAKEs. Dekker: at least one of the two sees the other's store,
	 * so a record is never left unnoticed while the consumer sleeps. */
	_Alignas(64) _Atomic uint32_t sleeping;
	_Atomic uint32_t wake;
	_Alignas(64) struct rec slot[RING_SLOTS];
};
_Static_assert(offsetof(struct ring, tail) % 64 == 0, "head and tail on separate lines");
_Static_assert(offsetof(struct ring, slot) % 64 == 0, "records on their own lines");

/* bench_scenario.param, bits: */
#define SPIN          1 /* the consumers busy-poll instead of sleeping */
#define RELAY         2 /* two hops: producer -> relay process -> consumers */
#define RELAY_SPIN    4 /* the relay busy-polls instead of sleeping */
#define MAX_CONSUMERS 64

/* One scenario a line: the table is read, not formatted. */
/* clang-format off */
static const struct bench_scenario scenarios[] = {
	{"steady", "ring-futex", 0, 1, 0},
	{"steady", "ring-spin", 0, 1, SPIN},
	{"steady", "relay-futex", 0, 1, RELAY},
	{"steady", "relay-spin", 0, 1, RELAY | RELAY_SPIN},
	{"fanout8", "ring-futex", 0, 8, 0},
	{"fanout8", "relay-futex", 0, 8, RELAY},
	{"fanout64", "ring-futex", 0, 64, 0},
	{"fanout64", "relay-futex", 0, 64, RELAY},
	{"burst", "ring-futex", 1, 1, 0},
	{"burst", "ring-spin", 1, 1, SPIN},
	{"burst", "relay-futex", 1, 1, RELAY},
	{"burst-fanout8", "ring-futex", 1, 8, 0},
	{"burst-fanout64", "ring-futex", 1, 64, 0},
};
/* clang-format on */

/* Consumer side: wait until head moves past t. Returns 0 when it did (or
 * may have: the caller rechecks), -1 when the run is over without a STOP. */
static int
wait_for_data(struct ring *r, uint64_t t, int spin, struct bench_board *b, uint64_t hard_ns)
{
	if (spin) {
		for (unsigned i = 0; i < 4096; i++) {
			/* Pairs with the producer's release store of head. */
			if (atomic_load_explicit(&r->head, memory_order_acquire) != t)
				return 0;
			bench_cpu_relax();
		}
		/* Tens of microseconds without data: give the core away once. When the
		 * scheduler put the producer on our core, a pure spinner would
		 * keep it waiting for a whole time slice per ring-full (100x
		 * fewer msg/s, seen on 2 cores); with a core to itself the
		 * yield returns at once. */
		sched_yield();
	} else {
		uint32_t w = atomic_load_explicit(&r->wake, memory_order_relaxed);

		atomic_store_explicit(&r->sleeping, 1, memory_order_relaxed);
		/* Pairs with the producer's fence in doorbell(): Dekker. */
		atomic_thread_fence(memory_order_seq_cst);
		if (atomic_load_explicit(&r->head, memory_order_relaxed) == t)
			bench_futex_wait(&r->wake, w, CONSUMER_POLL_NS);
		atomic_store_explicit(&r->sleeping, 0, memory_order_relaxed);
		if (atomic_load_explicit(&r->head, memory_order_relaxed) != t)
			return 0;
	}
	if (atomic_load_explicit(&b->stop, memory_order_relaxed) || stats_now_ns() > hard_ns)
		return -1;
	return 0;
}

/* A consumer process: returns its exit status (0 after STOP). */
static int
consume(struct ring *r, struct bench_board *b, uint32_t idx, int spin, uint64_t hard_ns)
{
	uint64_t t = 0;

	bench_board_ready(b);
	for (;;) {
		/* Pairs with the producer's release store of head. */
		uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
		uint64_t now;

		if (h == t) {
			if (wait_for_data(r, t, spin, b, hard_ns) < 0)
				return atomic_load_explicit(&b->stop, memory_order_relaxed) ? 0 : 3;
			continue;
		}
		/* The receive time: when this consumer first saw the record. */
		now = stats_now_ns();
		for (; t != h; t++) {
			const struct rec *rec = &r->slot[t & (RING_SLOTS - 1)];

			if (rec->seq != t)
				return 4; /* a ring bug: never report numbers from it */
			if (rec->kind == REC_STOP) {
				atomic_store_explicit(&r->tail, t + 1, memory_order_release);
				return 0;
			}
			if (rec->kind == REC_ACK)
				bench_board_ack(b, idx, now);
		}
		/* Hands the slots back; pairs with the acquire in push(). */
		atomic_store_explicit(&r->tail, t, memory_order_release);
	}
}

/* Producer: the consumer may be asleep on the futex; wake it if it says so.
 * Called after the release store of head. */
static void
doorbell(struct ring *r)
{
	/* Pairs with the consumer's fence in wait_for_data(): Dekker. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&r->sleeping, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&r->wake, 1, memory_order_relaxed);
		bench_futex_wake(&r->wake, 1);
	}
}

/* Producer: append one record, waiting (bounded) for a free slot. */
static int
push(struct ring *r, uint64_t *head, uint32_t kind, uint64_t stamp, uint64_t deadline_ns)
{
	uint64_t h = *head, checked = 0;
	unsigned spins = 0;
	struct rec *rec;

	/* Pairs with the consumer's release store of tail. */
	while (h - atomic_load_explicit(&r->tail, memory_order_acquire) >= RING_SLOTS) {
		if (++spins % SPINS_BEFORE_YIELD == 0) {
			uint64_t now = stats_now_ns();

			if (now > deadline_ns)
				return -ETIMEDOUT;
			/* A consumer that died leaves its ring full for good. */
			if (now - checked > CHILD_CHECK_NS) {
				if (checked && bench_check_children() < 0)
					return -ECHILD;
				checked = now;
			}
			/* On 2 cores the consumer may be waiting for our core. */
			sched_yield();
		}
		bench_cpu_relax();
	}
	rec = &r->slot[h & (RING_SLOTS - 1)];
	rec->seq = h;
	rec->stamp_ns = stamp;
	rec->kind = kind;
	/* Publishes the record; pairs with the consumer's acquire of head. */
	atomic_store_explicit(&r->head, h + 1, memory_order_release);
	*head = h + 1;
	return 0;
}

static uint64_t
consumed(struct ring *rings, uint32_t n)
{
	uint64_t sum = 0;

	for (uint32_t i = 0; i < n; i++)
		sum += atomic_load_explicit(&rings[i].tail, memory_order_relaxed);
	return sum;
}

/* What the producer writes to: the consumers' rings, or the relay's one. */
struct producer {
	struct ring *rings;
	uint64_t *heads;
	uint32_t n;
	uint64_t deadline;
};

/* bench_send_fn: one record to each ring the producer writes, and its
 * doorbell (a fence and a load when nobody sleeps on it). */
static int
send_ack(void *ctx, uint64_t seq, uint64_t stamp)
{
	struct producer *p = ctx;

	(void)seq;
	for (uint32_t c = 0; c < p->n; c++) {
		int err = push(&p->rings[c], &p->heads[c], REC_ACK, stamp, p->deadline);
		if (err < 0)
			return err;
		doorbell(&p->rings[c]);
	}
	return 0;
}

/* The relay process: copy every record of IN to each of the N rings OUT,
 * then ring their doorbells once per run of records. Returns its exit
 * status (0 after forwarding STOP). */
static int
relay(struct ring *in, struct ring *out, uint32_t n, int spin, struct bench_board *b,
      uint64_t hard_ns)
{
	uint64_t heads[MAX_CONSUMERS] = { 0 }, t = 0;
	int stop = 0;

	for (;;) {
		/* Pairs with the producer's release store of head. */
		uint64_t h = atomic_load_explicit(&in->head, memory_order_acquire);

		if (h == t) {
			if (wait_for_data(in, t, spin, b, hard_ns) < 0)
				return atomic_load_explicit(&b->stop, memory_order_relaxed) ? 0 : 3;
			continue;
		}
		for (; t != h; t++) {
			const struct rec *rec = &in->slot[t & (RING_SLOTS - 1)];

			if (rec->seq != t)
				return 4;
			for (uint32_t c = 0; c < n; c++)
				if (push(&out[c], &heads[c], rec->kind, rec->stamp_ns, hard_ns) < 0)
					return 5;
			stop |= rec->kind == REC_STOP;
		}
		/* Hands the slots back; pairs with the acquire in push(). */
		atomic_store_explicit(&in->tail, t, memory_order_release);
		for (uint32_t c = 0; c < n; c++)
			doorbell(&out[c]);
		if (stop)
			return 0;
	}
}

static int
run_burst(const struct bench_scenario *sc, const struct bench_opts *o, struct producer *p,
          struct ring *rings, struct bench_rep_out *out)
{
	uint64_t deadline = bench_rep_deadline(o);
	struct bench_rate rm, re;
	int err = 0;

	bench_rate_start(&rm, RATE_WINDOW_NS, 0);
	bench_rate_start(&re, RATE_WINDOW_NS, 0);
	bench_cpu_begin(out);
	while (err == 0) {
		uint64_t now = stats_now_ns(), ec;

		if (now > deadline)
			break;
		/* A batch per ring, then one doorbell: a producer with many
		 * messages at hand wakes each consumer once for all of them, as
		 * bl_redis pipelines PUBLISH. One doorbell per message wakes a
		 * consumer per message once consumers outnumber the cores, and
		 * measures the scheduler instead (40-70x fewer events/s at
		 * 8 consumers on 2 cores). */
		for (uint32_t c = 0; c < p->n && err == 0; c++) {
			for (unsigned k = 0; k < BURST_BATCH && err == 0; k++)
				err = push(&p->rings[c], &p->heads[c], REC_DATA, now, deadline);
			doorbell(&p->rings[c]);
		}
		ec = consumed(rings, sc->consumers);
		if (bench_rate_tick(&rm, ec / sc->consumers, &out->msg) < 0 ||
		    bench_rate_tick(&re, ec, &out->ev) < 0)
			err = -ENOMEM;
	}
	bench_cpu_end(out, consumed(rings, sc->consumers) / sc->consumers);
	/* Running out of time while the ring is full is the normal end here. */
	return err == -ETIMEDOUT ? 0 : err;
}

static int
run_rep(const struct bench_scenario *sc, const struct bench_opts *o, struct bench_rep_out *out)
{
	/* With a relay, one more ring: the relay's input, after the consumers'. */
	uint32_t nrings = sc->consumers + !!(sc->param & RELAY);
	size_t size = (size_t)nrings * sizeof(struct ring);
	uint64_t heads[MAX_CONSUMERS + 1] = { 0 }, hard;
	struct bench_board *b;
	struct ring *rings;
	struct producer p;
	int err = 0, failed;

	if (sc->consumers > MAX_CONSUMERS)
		return -EINVAL;
	rings = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rings == MAP_FAILED)
		return -errno;
	b = bench_board_create(sc->consumers);
	if (!b) {
		err = -errno;
		goto out_unmap;
	}
	hard = stats_now_ns() + o->budget_ns + CONSUMER_GRACE_NS;
	for (uint32_t c = 0; c < sc->consumers; c++) {
		pid_t pid = bench_fork();

		if (pid == 0)
			_exit(consume(&rings[c], b, c, sc->param & SPIN, hard));
		if (pid < 0) {
			err = -errno;
			goto out_kill;
		}
	}
	p = (struct producer){ .rings = rings, .heads = heads, .n = sc->consumers };
	if (sc->param & RELAY) {
		pid_t pid = bench_fork();

		if (pid == 0)
			_exit(relay(&rings[sc->consumers], rings, sc->consumers,
			            !!(sc->param & RELAY_SPIN), b, hard));
		if (pid < 0) {
			err = -errno;
			goto out_kill;
		}
		/* The relay is the "daemon" of this system: its CPU is shown
		 * apart, as heirloom's worker's (unwatched at the end). */
		bench_cpu_watch(pid);
		p = (struct producer){ .rings = &rings[sc->consumers],
			               .heads = &heads[sc->consumers],
			               .n = 1 };
	}
	err = bench_board_wait_ready(b, stats_now_ns() + 5 * BENCH_NS_PER_S);
	if (err < 0)
		goto out_kill;

	p.deadline = bench_rep_deadline(o) + BENCH_NS_PER_S;
	if (sc->burst)
		err = run_burst(sc, o, &p, rings, out);
	else
		err = bench_steady_run(o, b, 0, send_ack, &p, out);
	if (err < 0)
		goto out_kill;

	/* The relay forwards STOP to the consumers, then exits. */
	for (uint32_t c = 0; c < p.n; c++) {
		err = push(&p.rings[c], &p.heads[c], REC_STOP, 0, stats_now_ns() + BENCH_NS_PER_S);
		if (err < 0)
			goto out_kill;
		doorbell(&p.rings[c]);
	}
	failed = bench_reap_all(stats_now_ns() + 2 * BENCH_NS_PER_S);
	if (failed > 0) {
		fprintf(stderr, "%s/%s: %d consumer(s) failed\n", sc->name, sc->variant, failed);
		err = -ECHILD;
	}
	goto out_board;
out_kill:
	atomic_store_explicit(&b->stop, 1, memory_order_relaxed);
	bench_kill_all();
out_board:
	bench_cpu_unwatch_all();
	bench_board_destroy(b);
out_unmap:
	munmap(rings, size);
	return err;
}

int
main(int argc, char **argv)
{
	struct bench_opts o;

	bench_parse_args(argc, argv, &o);
	return bench_run_all(&o, scenarios, sizeof(scenarios) / sizeof(scenarios[0]), run_rep);
}
