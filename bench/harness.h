/* SPDX-License-Identifier: MIT */
/*
 * The benchmark harness: common command line, repetitions merged into one
 * reported series, child processes that cannot outlive their parent, and a
 * shared "ack board" on which consumer processes post when they received a
 * message.
 *
 * It owns the children it forks and the board mappings it creates. It must
 * never leave a child running: every wait is bounded by a deadline, children
 * die with their parent (PR_SET_PDEATHSIG), and SIGINT, SIGTERM, SIGALRM
 * (the watchdog) and exit() kill whatever is left.
 *
 * Deadlines are absolute stats_now_ns() values, so one number means the same
 * instant in every process of the benchmark.
 *
 * Synchronization table (X = needs external sync, - = free):
 *   bench_fork / bench_reap_all / bench_kill_all    X (parent's main thread)
 *   bench_board_ack, bench_board_ready              - (any consumer process)
 *   bench_board_arm, bench_board_wait_*             X (the one producer)
 */
#ifndef HL_BENCH_HARNESS_H
#define HL_BENCH_HARNESS_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "stats.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* Tell the core we are spinning, so a sibling hyperthread gets the pipeline
 * and the exit from the loop is not punished by a memory-order flush. */
#define bench_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define bench_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define bench_cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#endif

#define BENCH_MAX_REPS     64
#define BENCH_MAX_CHILDREN 256
#define BENCH_NS_PER_MS    1000000ull
#define BENCH_NS_PER_S     1000000000ull

/* Messages measured at the start of each repetition but not recorded: they
 * pay for first-touch page faults and cold caches in every process. */
#define BENCH_WARMUP 20

struct bench_rep_out;

/* The common command line of every benchmark binary. */
struct bench_opts {
	uint64_t iters;        /* cap on messages measured per repetition */
	uint64_t budget_ns;    /* cap on wall-clock time per repetition */
	unsigned reps;         /* repetitions per series, merged in the report */
	int quick;             /* --quick: smaller caps, for smoke runs */
	const char *out_dir;   /* --out: raw samples and summary.json go here */
	const char *json_path; /* --json: summary file; default out_dir/summary.json */
	const char *sock;      /* --sock: a server's Unix socket (bl_redis) */
	const char *only;      /* --only: run series whose "scenario/variant" contains it */
};

/* Parse argv into *o (defaults first: reps 3, and iters/budget from --quick).
 * --help prints usage naming prog and exits 0; a bad option prints usage to
 * stderr and exits 2, before any child exists. */
void bench_parse_args(int argc, char **argv, struct bench_opts *o);

/* Whether --only selects this series: "scenario/variant" contains one of
 * its comma-separated parts (a part starting with '^': starts with it). */
int bench_wanted(const struct bench_opts *o, const char *scenario, const char *variant);

/* One reported line: the repetitions of one scenario and variant. */
struct bench_series {
	const char *scenario; /* what is measured: "steady", "fanout8", "burst" ... */
	const char *variant;  /* the mechanism: "ring-futex", "uds", "heirloom" ... */
	const char *unit;     /* "ns" for latency; "msg/s", "ev/s" for rates */
	enum stats_kind kind;
	struct stats_samples all; /* every repetition's samples, merged */
	uint64_t medians[BENCH_MAX_REPS];
	unsigned reps;
	/* Per repetition that measured it: CPU ns per delivered message, all
	 * processes, and the daemons' part (bench_rep_out). */
	double cpu[BENCH_MAX_REPS];
	double cpu_daemon[BENCH_MAX_REPS];
	unsigned ncpu;
};

/* The strings must outlive the series (string literals, in practice). */
void bench_series_init(struct bench_series *s, const char *scenario, const char *variant,
                       enum stats_kind kind, const char *unit);
void bench_series_fini(struct bench_series *s);

/* Merge one repetition's samples and remember its median. An empty rep is
 * ignored. Returns 0, -E2BIG past BENCH_MAX_REPS, or -ENOMEM; on failure the
 * series is unchanged. */
int bench_series_add_rep(struct bench_series *s, const struct stats_samples *rep);

/* Remember one repetition's CPU per message (out->msgs 0: nothing). */
void bench_series_add_cpu(struct bench_series *s, const struct bench_rep_out *out);

/* Print the table row to stdout, warn on stderr about the spread of medians,
 * and with an output directory write OUT/raw/<scenario>.<variant>.<unit>.txt
 * (unit "/" becomes "_") and append to the JSON summary. A series with no
 * samples prints a "no samples" row. Returns 0 or the first negative errno
 * met; the row is printed whatever happens to the files. */
int bench_series_report(struct bench_series *s, const struct bench_opts *o);

/* One scenario of a benchmark binary. */
struct bench_scenario {
	const char *name;    /* what is measured: steady, fanout8, burst, burst-fanout8 ... */
	const char *variant; /* the mechanism: ring-futex, uds, redis, heirloom ... */
	int burst;           /* 1: report msg/s (and ev/s when consumers > 1), not latency */
	uint32_t consumers;  /* observer processes a message goes to */
	int param;           /* the rep function's own (bl_futex_ring: 1 = spin) */
};

/* What one repetition measured. A steady rep fills lat (ns, stamp to the
 * last consumer's receive, warm-up excluded); a burst rep fills msg
 * (messages per second every consumer received, per window) and ev (the sum
 * over consumers), e.g. with bench_rate_tick(). Both may bracket their
 * measured loop with bench_cpu_begin() / bench_cpu_end(), which fill the
 * cpu_* fields; a rep that does not leaves msgs 0 (no CPU column). */
struct bench_rep_out {
	struct stats_samples lat;
	struct stats_samples msg;
	struct stats_samples ev;
	uint64_t cpu_ns;        /* CPU time of every process involved (below) */
	uint64_t cpu_daemon_ns; /* the part of it spent in watched daemons */
	uint64_t msgs;          /* messages delivered to every consumer meanwhile */
	uint64_t cpu_mark[3];   /* bench_cpu_begin()'s snapshot: others, daemons, self */
	/* Set by bench_steady_run(): this process's CPU inside send() only,
	 * counted instead of all of it (see bench_steady_run()). */
	int cpu_self_given;
	uint64_t cpu_self_ns;
};

/* Run one repetition: fork the consumers, measure, stop and reap them
 * (bench_reap_all) before returning. Returns 0 or a negative errno; on
 * failure it must have killed its children (bench_kill_all). */
typedef int (*bench_rep_fn)(const struct bench_scenario *sc, const struct bench_opts *o,
                            struct bench_rep_out *out);

/* o->reps repetitions of sc, merged and reported (bench_series_report). The
 * first failing repetition ends the series, which still reports what the
 * earlier ones measured. Returns 0 or that repetition's error. */
int bench_run(const struct bench_scenario *sc, const struct bench_opts *o, bench_rep_fn rep);

/* The whole of a benchmark's main() after bench_parse_args(): installs the
 * guards with a watchdog sized from o, prints the header, runs every
 * scenario --only selects. Returns the exit status: 0, or 1 when any
 * scenario failed. */
int bench_run_all(const struct bench_opts *o, const struct bench_scenario *scs, size_t n,
                  bench_rep_fn rep);

/* Once, in the parent, before the first bench_fork() (bench_run_all() does
 * it): SIGINT, SIGTERM, SIGHUP and the watchdog SIGALRM after watchdog_s
 * seconds kill and reap every child, then exit 128 + signal; exit() kills
 * them too; SIGPIPE is ignored, so a dead consumer's socket is an EPIPE. */
void bench_install_guards(unsigned watchdog_s);

/* fork() plus bookkeeping, -1 with errno set on failure (EMFILE past
 * BENCH_MAX_CHILDREN). In the child it sets PR_SET_PDEATHSIG to SIGKILL (and
 * exits at once if the parent is already gone), restores default signal
 * handling and forgets its siblings. The child must end with _exit(), never
 * return into the caller's stack. */
pid_t bench_fork(void);

/* Wait until every tracked child has exited or deadline_ns passed, then
 * SIGKILL and reap the rest. Returns the number of children that did not
 * exit with status 0 (killed ones included). */
int bench_reap_all(uint64_t deadline_ns);

/* SIGKILL and reap every tracked child. Safe to call twice. */
void bench_kill_all(void);

/* -ECHILD when a tracked child has already exited (it is reaped and
 * forgotten), else 0. Lets a producer stop waiting for a consumer that died. */
int bench_check_children(void);

/*
 * CPU per delivered message (issue 16): the CPU time, user and system, of
 * every process a message goes through, daemons included, over the
 * measured loop. bench_cpu_begin() and bench_cpu_end() each add up this
 * process (CLOCK_PROCESS_CPUTIME_ID; bench_steady_run() counts it inside
 * send only), every live child of bench_fork()
 * (consumers, a relay) and every watched pid (a worker, its keeper, a
 * redis-server), each from /proc/PID/task/TID/schedstat (ns, all threads)
 * or, without schedstat, /proc/PID/stat utime + stime (clock ticks). A
 * thread that exits in between loses its share: none of ours does.
 */
/* Count PID as a daemon (its CPU also in cpu_daemon_ns); a child of
 * bench_fork() may be one (the relay), counted once. */
int bench_cpu_watch(pid_t pid); /* 0, or -ENOSPC past 8 pids */
void bench_cpu_unwatch_all(void);
/* The CPU time in ns of PID, all threads; 0 when it is gone. */
uint64_t bench_proc_cpu_ns(pid_t pid);
/* This process's (CLOCK_PROCESS_CPUTIME_ID), in ns. */
uint64_t bench_self_cpu_ns(void);
/* /proc/PID/stat read into buf: a pointer to its third field (the state
 * letter, after the command's closing ')'), or NULL when PID is gone. */
const char *bench_proc_stat(pid_t pid, char *buf, size_t cap);
void bench_cpu_begin(struct bench_rep_out *out);
/* msgs: messages delivered to every consumer since bench_cpu_begin(). */
void bench_cpu_end(struct bench_rep_out *out, uint64_t msgs);

/* Shared futex words (not FUTEX_PRIVATE: the waiter and the waker are in
 * different processes). wait returns 0 when woken, -EAGAIN when *w no
 * longer held expect, -ETIMEDOUT or -EINTR. */
int bench_futex_wait(_Atomic uint32_t *w, uint32_t expect, uint64_t timeout_ns);
void bench_futex_wake(_Atomic uint32_t *w, int n);

/*
 * The ack board: one padded slot per consumer in a MAP_SHARED anonymous
 * mapping that the producer creates before forking. For one message the
 * producer arms the board, publishes, and waits until all n consumers have
 * acked; each consumer takes its receive time first and acks after, so the
 * ack's own cost is never inside a measured latency.
 */
struct bench_ack_slot {
	/* Written by consumer i (relaxed, before its fetch_add on done, which
	 * releases it); read by the producer after it acquired done == n. */
	_Alignas(64) _Atomic uint64_t recv_ns;
	/* Messages consumer i has taken, written by consumer i only (relaxed:
	 * the producer samples it for rates and tolerates a stale value). */
	_Atomic uint64_t count;
};

struct bench_board {
	/* Consumers that acked the current message. Producer stores 0 when it
	 * arms, consumers fetch_add (acq_rel); the one that makes it n wakes the
	 * producer, who futex-waits on it. */
	_Alignas(64) _Atomic uint32_t done;
	/* Consumers ready to receive (subscribed, attached); producer polls. */
	_Alignas(64) _Atomic uint32_t ready;
	/* Set once by the producer at the end of a run or on an error;
	 * consumers poll it whenever a blocking wait times out. */
	_Atomic uint32_t stop;
	/* Optional: the stamp the consumers saw (a system that carries its
	 * own, like heirloom's ev.timestamp_ns). Written by each consumer
	 * (relaxed) before its ack, which releases it; read by
	 * bench_steady_run() with BENCH_STEADY_BOARD_STAMP. */
	_Atomic uint64_t stamp;
	uint32_t n; /* slots; written before fork, read-only after */
	struct bench_ack_slot slot[];
};

/* NULL with errno set on failure. */
struct bench_board *bench_board_create(uint32_t n);
void bench_board_destroy(struct bench_board *b);

/* Producer, before each message: nobody has acked it yet. The relaxed store
 * is ordered before the consumers' increments by the publication that
 * follows it (a release store, or a syscall). */
void bench_board_arm(struct bench_board *b);

/* Consumer i received the current message at recv_ns. A plain atomic
 * increment: no consumer ever wakes the producer (see below). */
void bench_board_ack(struct bench_board *b, uint32_t i, uint64_t recv_ns);

/* Producer: wait until all n consumers acked, and give the latest receive
 * time. It polls the count and never sleeps on a futex a consumer wakes
 * (issue 16: that would add a wake-up, and its CPU, to every system's
 * message): between polls it sleeps step_ns with nanosleep, or with
 * step_ns 0 yields the core. Returns 0, -ETIMEDOUT at deadline_ns, or
 * -ECHILD when a consumer died meanwhile. */
int bench_board_wait_acks(struct bench_board *b, uint64_t deadline_ns, uint64_t step_ns,
                          uint64_t *last_recv_ns);

/*
 * The steady scenarios, one loop for every system (issue 16): one message
 * in flight; the producer stamps it, sends it, then sleeps (nanosleep,
 * timer slack 1 us) until BENCH_PACE_NS after the stamp and polls the ack
 * board every BENCH_POLL_NS until every consumer has it. So every system
 * gets the same message rate (about 12,500 a second while its latency is
 * below the pace), and the producer's core sleeps between sends as a real
 * publisher's would: the cost of waking a sleeping core lands in every
 * system's figures alike. Latency = the last consumer's receive - stamp.
 */
#define BENCH_PACE_NS 80000u
#define BENCH_POLL_NS 10000u

/* Send one message with this stamp (seq counts from 0, warm-up included).
 * Returns 0 or a negative errno. */
typedef int (*bench_send_fn)(void *ctx, uint64_t seq, uint64_t stamp_ns);

#define BENCH_STEADY_B2B         0x1u /* no pacing: the next right after the acks */
#define BENCH_STEADY_BOARD_STAMP 0x2u /* latency from the stamp the consumers posted */

/* Run the loop until o->iters measured messages (after BENCH_WARMUP) or
 * o's budget; fills out->lat and the CPU fields. The producer's own CPU
 * counts only inside send (what publishing costs), not its sleeps and
 * polls of the board, which would charge a slower system more for the
 * bench's own waiting. Returns 0 or the first error of send or of the
 * wait. */
int bench_steady_run(const struct bench_opts *o, struct bench_board *b, unsigned flags,
                     bench_send_fn send, void *ctx, struct bench_rep_out *out);

void bench_board_ready(struct bench_board *b);
int bench_board_wait_ready(struct bench_board *b, uint64_t deadline_ns);

/* Sum of every slot's count (a snapshot; see the slot's comment). */
uint64_t bench_board_count(const struct bench_board *b);

/* The deadline for one repetition starting now under o's budget. */
uint64_t bench_rep_deadline(const struct bench_opts *o);

/* Keeps recording every sub-window of a burst run: call it as often as
 * convenient with the running total of delivered events; each time a
 * window of at least win_ns has passed it adds events/s for that window to
 * out (the first window, a warm-up, is dropped). Returns 0 or -ENOMEM. */
struct bench_rate {
	uint64_t win_ns;
	uint64_t t0;
	uint64_t c0;
	unsigned windows;
};
void bench_rate_start(struct bench_rate *r, uint64_t win_ns, uint64_t count);
int bench_rate_tick(struct bench_rate *r, uint64_t count, struct stats_samples *out);

#endif /* HL_BENCH_HARNESS_H */
