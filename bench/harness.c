/* SPDX-License-Identifier: MIT */
/*
 * The benchmark harness (see harness.h for the contracts). This file owns the
 * table of live children and the signal handlers that empty it; it must
 * never block without a deadline, and never let a child outlive the parent.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Full runs: enough samples for a stable p99.9 within about 2 s a rep. */
#define FULL_ITERS     100000u
#define FULL_BUDGET_MS 2000u
/* --quick: every baseline together stays well under a minute on 2 cores. */
#define QUICK_ITERS     10000u
#define QUICK_BUDGET_MS 250u

/*
 * Live children. Written only by the parent's main thread; read by the signal
 * handler, which may interrupt an update: an entry is stored before the count
 * grows and the count shrinks before an entry is reused, so the handler sees
 * only pids that are or were our children (a pid already reaped is at worst
 * killed in vain, as it cannot have been reused while the entry is live).
 */
static volatile pid_t children[BENCH_MAX_CHILDREN];
static volatile sig_atomic_t nchildren;
static pid_t parent_pid;

/* Daemons whose CPU counts (bench_cpu_watch()); parent's main thread only. */
#define MAX_WATCHED 8
static pid_t watched[MAX_WATCHED];
static unsigned nwatched;

static void
usage(FILE *f, const char *prog)
{
	fprintf(f,
	        "usage: %s [--iters N] [--reps R] [--quick] [--out DIR] [--json PATH]\n"
	        "          [--sock PATH] [--only SUBSTR]\n"
	        "  --iters N    at most N measured messages per repetition\n"
	        "  --reps R     repetitions merged into each row (default 3, max %d)\n"
	        "  --quick      smaller caps (%u messages, %u ms per repetition)\n"
	        "  --out DIR    write DIR/raw/<scenario>.<variant>.<unit>.txt and "
	        "DIR/summary.json\n"
	        "  --json PATH  append the JSON summary here instead\n"
	        "  --sock PATH  Unix socket of the server under test (bl_redis)\n"
	        "  --only S     run only series whose \"scenario/variant\" contains S\n"
	        "               (or one of S's comma-separated parts; ^ anchors a part)\n",
	        prog, BENCH_MAX_REPS, QUICK_ITERS, QUICK_BUDGET_MS);
}

static int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

void
bench_parse_args(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
		{ "iters", required_argument, NULL, 'i' },
		{ "reps", required_argument, NULL, 'r' },
		{ "quick", no_argument, NULL, 'q' },
		{ "out", required_argument, NULL, 'o' },
		{ "json", required_argument, NULL, 'j' },
		{ "sock", required_argument, NULL, 's' },
		{ "only", required_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t iters = 0, reps = 3;
	int c;

	memset(o, 0, sizeof(*o));
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			if (parse_u64(optarg, 1, UINT32_MAX, &iters) < 0)
				goto bad;
			break;
		case 'r':
			if (parse_u64(optarg, 1, BENCH_MAX_REPS, &reps) < 0)
				goto bad;
			break;
		case 'q': o->quick = 1; break;
		case 'o': o->out_dir = optarg; break;
		case 'j': o->json_path = optarg; break;
		case 's': o->sock = optarg; break;
		case 'O': o->only = optarg; break;
		case 'h': usage(stdout, argv[0]); exit(0);
		default: goto bad;
		}
	}
	if (optind != argc)
		goto bad;
	o->reps = (unsigned)reps;
	o->iters = iters ? iters : o->quick ? QUICK_ITERS : FULL_ITERS;
	o->budget_ns = (o->quick ? QUICK_BUDGET_MS : FULL_BUDGET_MS) * BENCH_NS_PER_MS;
	return;
bad:
	usage(stderr, argv[0]);
	exit(2);
}

int
bench_wanted(const struct bench_opts *o, const char *scenario, const char *variant)
{
	char name[256];

	if (!o->only)
		return 1;
	snprintf(name, sizeof(name), "%s/%s", scenario, variant);
	/* Comma-separated alternatives: any one of them; "^" anchors one at
	 * the start of the name. */
	for (const char *p = o->only;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		int anchored = len > 0 && p[0] == '^';

		if (anchored) {
			p++;
			len--;
		}
		for (const char *q = name; len && *q && (!anchored || q == name); q++)
			if (strncmp(q, p, len) == 0)
				return 1;
		if (!comma)
			return len == 0; /* "" selects everything, as before */
		p = comma + 1;
	}
}

void
bench_series_init(struct bench_series *s, const char *scenario, const char *variant,
                  enum stats_kind kind, const char *unit)
{
	memset(s, 0, sizeof(*s));
	s->scenario = scenario;
	s->variant = variant;
	s->kind = kind;
	s->unit = unit;
	stats_init(&s->all);
}

void
bench_series_fini(struct bench_series *s)
{
	stats_fini(&s->all);
}

int
bench_series_add_rep(struct bench_series *s, const struct stats_samples *rep)
{
	uint64_t med;
	int err;

	if (rep->n == 0)
		return 0;
	if (s->reps == BENCH_MAX_REPS)
		return -E2BIG;
	med = stats_median(rep);
	err = stats_merge(&s->all, rep);
	if (err < 0)
		return err;
	s->medians[s->reps++] = med;
	return 0;
}

void
bench_series_add_cpu(struct bench_series *s, const struct bench_rep_out *out)
{
	if (out->msgs == 0 || s->ncpu == BENCH_MAX_REPS)
		return;
	s->cpu[s->ncpu] = (double)out->cpu_ns / (double)out->msgs;
	s->cpu_daemon[s->ncpu] = (double)out->cpu_daemon_ns / (double)out->msgs;
	s->ncpu++;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of n values (n > 0), nearest rank as stats.c; sorts v. */
static double
median_of(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(n - 1) / 2];
}

/* The CPU figures of a series into sum: median over the repetitions, and
 * their range (the spread); -1 when none measured it. */
static void
cpu_summary(const struct bench_series *s, struct stats_summary *sum)
{
	double v[BENCH_MAX_REPS], d[BENCH_MAX_REPS];

	sum->cpu_ns = sum->cpu_daemon_ns = sum->cpu_min_ns = sum->cpu_max_ns = -1;
	if (s->ncpu == 0)
		return;
	memcpy(v, s->cpu, s->ncpu * sizeof(*v));
	memcpy(d, s->cpu_daemon, s->ncpu * sizeof(*d));
	sum->cpu_ns = median_of(v, s->ncpu);
	sum->cpu_min_ns = v[0];
	sum->cpu_max_ns = v[s->ncpu - 1];
	sum->cpu_daemon_ns = median_of(d, s->ncpu);
}

/* mkdir -p for the output directory; a component that exists is fine. */
static int
make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int
write_files(struct bench_series *s, const struct bench_opts *o, const struct stats_summary *sum,
            double spread)
{
	char dir[PATH_MAX], path[PATH_MAX], unit[32];
	const char *json = o->json_path;
	int err, n;

	if (o->out_dir) {
		n = snprintf(dir, sizeof(dir), "%s/raw", o->out_dir);
		if (n < 0 || (size_t)n >= sizeof(dir))
			return -ENAMETOOLONG;
		err = make_dirs(dir);
		if (err < 0)
			return err;
		/* "msg/s" cannot be part of a file name. */
		snprintf(unit, sizeof(unit), "%s", s->unit);
		for (char *p = unit; *p; p++)
			if (*p == '/')
				*p = '_';
		n = snprintf(path, sizeof(path), "%s/%s.%s.%s.txt", dir, s->scenario, s->variant,
		             unit);
		if (n < 0 || (size_t)n >= sizeof(path))
			return -ENAMETOOLONG;
		err = stats_write_raw(&s->all, path);
		if (err < 0)
			return err;
		if (!json) {
			n = snprintf(path, sizeof(path), "%s/summary.json", o->out_dir);
			if (n < 0 || (size_t)n >= sizeof(path))
				return -ENAMETOOLONG;
			json = path;
		}
	}
	if (!json)
		return 0;
	return stats_append_json(json, s->scenario, s->variant, s->kind, s->unit, sum, s->reps,
	                         spread);
}

int
bench_series_report(struct bench_series *s, const struct bench_opts *o)
{
	struct stats_summary sum;
	char label[160];
	double spread;
	int err;

	err = stats_summarize(&s->all, &sum);
	if (err == 0)
		cpu_summary(s, &sum);
	if (err < 0) {
		printf("%-16s | %-14s | no samples\n", s->scenario, s->variant);
		fflush(stdout);
		return err;
	}
	stats_print_row(stdout, s->scenario, s->variant, s->kind, s->unit, &sum);
	fflush(stdout);
	if (s->kind == STATS_RATE)
		snprintf(label, sizeof(label), "%s/%s %s", s->scenario, s->variant, s->unit);
	else
		snprintf(label, sizeof(label), "%s/%s", s->scenario, s->variant);
	spread = stats_spread(s->medians, s->reps, label, stderr);
	err = write_files(s, o, &sum, spread);
	if (err < 0)
		fprintf(stderr, "warning: %s: results not written: %s\n", label,
		        strerrordesc_np(-err));
	return err;
}

int
bench_run(const struct bench_scenario *sc, const struct bench_opts *o, bench_rep_fn rep)
{
	struct bench_series lat, msg, ev;
	struct bench_rep_out out;
	int err = 0;

	bench_series_init(&lat, sc->name, sc->variant, STATS_LATENCY, "ns");
	bench_series_init(&msg, sc->name, sc->variant, STATS_RATE, "msg/s");
	bench_series_init(&ev, sc->name, sc->variant, STATS_RATE, "ev/s");
	for (unsigned r = 0; r < o->reps && err == 0; r++) {
		stats_init(&out.lat);
		stats_init(&out.msg);
		stats_init(&out.ev);
		out.cpu_ns = out.cpu_daemon_ns = out.msgs = out.cpu_self_ns = 0;
		out.cpu_self_given = 0;
		err = rep(sc, o, &out);
		if (err == 0)
			err = bench_series_add_rep(&lat, &out.lat);
		if (err == 0) {
			bench_series_add_cpu(&lat, &out);
			bench_series_add_cpu(&msg, &out);
		}
		if (err == 0)
			err = bench_series_add_rep(&msg, &out.msg);
		if (err == 0)
			err = bench_series_add_rep(&ev, &out.ev);
		stats_fini(&out.lat);
		stats_fini(&out.msg);
		stats_fini(&out.ev);
	}
	if (err < 0)
		fprintf(stderr, "%s/%s: %s\n", sc->name, sc->variant, strerrordesc_np(-err));
	if (!sc->burst) {
		bench_series_report(&lat, o);
	} else {
		bench_series_report(&msg, o);
		/* With one consumer every message is one event: no second row. */
		if (sc->consumers > 1)
			bench_series_report(&ev, o);
	}
	bench_series_fini(&lat);
	bench_series_fini(&msg);
	bench_series_fini(&ev);
	return err;
}

int
bench_run_all(const struct bench_opts *o, const struct bench_scenario *scs, size_t n,
              bench_rep_fn rep)
{
	uint64_t per_rep_s = o->budget_ns / BENCH_NS_PER_S + 5;
	int failed = 0;

	/* Every repetition takes its budget plus setup and the reap deadline;
	 * past twice that something is stuck, and the watchdog ends it. */
	bench_install_guards((unsigned)(30 + 2 * n * o->reps * per_rep_s));
	stats_print_header(stdout);
	for (size_t i = 0; i < n; i++) {
		if (!bench_wanted(o, scs[i].name, scs[i].variant))
			continue;
		if (bench_run(&scs[i], o, rep) < 0)
			failed = 1;
	}
	return failed;
}

/* Async-signal-safe: kill(), waitpid(), write() and _exit() only. */
static void
on_fatal_signal(int sig)
{
	for (sig_atomic_t i = 0; i < nchildren; i++)
		kill(children[i], SIGKILL);
	/* Reap them too: left as zombies they would wait on whatever init the
	 * machine has. SIGKILL cannot be caught, so each wait ends. */
	for (sig_atomic_t i = 0; i < nchildren; i++)
		while (waitpid(children[i], NULL, 0) < 0 && errno == EINTR)
			;
	if (sig == SIGALRM) {
		static const char msg[] = "bench: watchdog expired, children killed\n";
		ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
		(void)r;
	}
	_exit(128 + sig);
}

static void
kill_at_exit(void)
{
	if (getpid() == parent_pid)
		bench_kill_all();
}

void
bench_install_guards(unsigned watchdog_s)
{
	struct sigaction sa;

	parent_pid = getpid();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	/* A consumer that died makes our next write to its socket fail with
	 * EPIPE, which the caller handles; the default action would kill us
	 * before we could kill the other children. */
	signal(SIGPIPE, SIG_IGN);
	atexit(kill_at_exit);
	alarm(watchdog_s);
}

pid_t
bench_fork(void)
{
	pid_t pid;

	if (nchildren == BENCH_MAX_CHILDREN) {
		errno = EMFILE;
		return -1;
	}
	fflush(NULL); /* or the child's _exit would drop, or exit repeat, our buffers */
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* A child must never signal its siblings on its own exit. */
		nchildren = 0;
		alarm(0);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGALRM, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* The parent may have died before prctl(): then we are already
		 * someone else's child and nobody would ever stop us. */
		if (getppid() != parent_pid)
			_exit(1);
		return 0;
	}
	children[nchildren] = pid;
	nchildren = nchildren + 1;
	return pid;
}

static void
forget_child(sig_atomic_t i)
{
	/* Shrink first (see the table's comment), then move the last entry. */
	sig_atomic_t last = nchildren - 1;
	pid_t moved = children[last];

	nchildren = last;
	children[i] = moved;
}

int
bench_check_children(void)
{
	int status, dead = 0;

	for (sig_atomic_t i = 0; i < nchildren;) {
		if (waitpid(children[i], &status, WNOHANG) == children[i]) {
			forget_child(i);
			dead = 1;
			continue;
		}
		i++;
	}
	return dead ? -ECHILD : 0;
}

int
bench_reap_all(uint64_t deadline_ns)
{
	int failed = 0, status;

	while (nchildren > 0) {
		int progress = 0;

		for (sig_atomic_t i = 0; i < nchildren;) {
			pid_t r = waitpid(children[i], &status, WNOHANG);

			if (r == children[i] || (r < 0 && errno == ECHILD)) {
				if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
					failed++;
				forget_child(i);
				progress = 1;
				continue;
			}
			i++;
		}
		if (nchildren == 0)
			break;
		if (stats_now_ns() >= deadline_ns) {
			failed += (int)nchildren;
			bench_kill_all();
			break;
		}
		if (!progress) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	return failed;
}

void
bench_kill_all(void)
{
	for (sig_atomic_t i = 0; i < nchildren; i++)
		kill(children[i], SIGKILL);
	while (nchildren > 0) {
		/* SIGKILL cannot be blocked, so this wait ends. */
		while (waitpid(children[nchildren - 1], NULL, 0) < 0 && errno == EINTR)
			;
		nchildren = nchildren - 1;
	}
}

int
bench_futex_wait(_Atomic uint32_t *w, uint32_t expect, uint64_t timeout_ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(timeout_ns / BENCH_NS_PER_S),
		.tv_nsec = (long)(timeout_ns % BENCH_NS_PER_S),
	};

	/* The kernel reads the word with a plain load; an _Atomic uint32_t has
	 * the representation of a uint32_t on every target we build for. */
	if (syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, expect, &ts, NULL, 0) == 0)
		return 0;
	if (errno == EWOULDBLOCK)
		return -EAGAIN;
	return -errno;
}

void
bench_futex_wake(_Atomic uint32_t *w, int n)
{
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, n, NULL, NULL, 0);
}

static size_t
board_size(uint32_t n)
{
	return sizeof(struct bench_board) + (size_t)n * sizeof(struct bench_ack_slot);
}

struct bench_board *
bench_board_create(uint32_t n)
{
	struct bench_board *b;

	b = mmap(NULL, board_size(n), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		return NULL;
	/* Fresh anonymous pages are zero: every counter starts at 0. */
	b->n = n;
	return b;
}

void
bench_board_destroy(struct bench_board *b)
{
	if (b)
		munmap(b, board_size(b->n));
}

void
bench_board_arm(struct bench_board *b)
{
	atomic_store_explicit(&b->done, 0, memory_order_relaxed);
}

void
bench_board_ack(struct bench_board *b, uint32_t i, uint64_t recv_ns)
{
	atomic_store_explicit(&b->slot[i].recv_ns, recv_ns, memory_order_relaxed);
	/* Releases recv_ns; pairs with the acquire load in bench_board_wait_acks(). */
	atomic_fetch_add_explicit(&b->done, 1, memory_order_release);
}

static void
sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / BENCH_NS_PER_S),
		               .tv_nsec = (long)(ns % BENCH_NS_PER_S) };

	nanosleep(&ts, NULL);
}

int
bench_board_wait_acks(struct bench_board *b, uint64_t deadline_ns, uint64_t step_ns,
                      uint64_t *last_recv_ns)
{
	uint64_t last = 0, checked = stats_now_ns();

	/* Pairs with the release fetch_add in bench_board_ack(). */
	while (atomic_load_explicit(&b->done, memory_order_acquire) < b->n) {
		uint64_t now = stats_now_ns();

		if (now >= deadline_ns)
			return -ETIMEDOUT;
		/* A consumer that died never acks. */
		if (now - checked > 20 * BENCH_NS_PER_MS) {
			if (bench_check_children() < 0)
				return -ECHILD;
			checked = now;
		}
		if (step_ns)
			sleep_ns(step_ns);
		else
			sched_yield();
	}
	for (uint32_t i = 0; i < b->n; i++) {
		uint64_t t = atomic_load_explicit(&b->slot[i].recv_ns, memory_order_relaxed);
		if (t > last)
			last = t;
	}
	*last_recv_ns = last;
	return 0;
}

/* Until the absolute CLOCK_MONOTONIC time at_ns (stats_now_ns()). */
static void
sleep_until(uint64_t at_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(at_ns / BENCH_NS_PER_S),
		               .tv_nsec = (long)(at_ns % BENCH_NS_PER_S) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int
bench_steady_run(const struct bench_opts *o, struct bench_board *b, unsigned flags,
                 bench_send_fn send, void *ctx, struct bench_rep_out *out)
{
	uint64_t deadline = bench_rep_deadline(o), measured = 0;
	int err;

	err = stats_reserve(&out->lat, o->iters);
	if (err < 0)
		return err;
	/* The pace's sleeps end within a microsecond, not the default 50. */
	prctl(PR_SET_TIMERSLACK, 1000ul, 0, 0, 0);
	out->cpu_self_given = 1;
	out->cpu_self_ns = 0;
	for (uint64_t i = 0; i < o->iters + BENCH_WARMUP; i++) {
		uint64_t c0, stamp, recv, from;

		if (i == BENCH_WARMUP)
			bench_cpu_begin(out);
		c0 = bench_self_cpu_ns();
		stamp = stats_now_ns();
		if (stamp > deadline)
			break;
		bench_board_arm(b);
		err = send(ctx, i, stamp);
		if (err < 0)
			return err;
		out->cpu_self_ns += bench_self_cpu_ns() - c0;
		if (!(flags & BENCH_STEADY_B2B))
			sleep_until(stamp + BENCH_PACE_NS);
		err = bench_board_wait_acks(b, deadline + BENCH_NS_PER_S,
		                            flags & BENCH_STEADY_B2B ? 0 : BENCH_POLL_NS, &recv);
		if (err < 0)
			return err;
		if (i < BENCH_WARMUP)
			continue;
		from = stamp;
		if (flags & BENCH_STEADY_BOARD_STAMP)
			from = atomic_load_explicit(&b->stamp, memory_order_relaxed);
		stats_add(&out->lat, recv > from ? recv - from : 0); /* reserved: cannot fail */
		measured++;
	}
	if (measured)
		bench_cpu_end(out, measured);
	return 0;
}

int
bench_cpu_watch(pid_t pid)
{
	if (pid <= 0)
		return -EINVAL;
	for (unsigned i = 0; i < nwatched; i++)
		if (watched[i] == pid)
			return 0;
	if (nwatched == MAX_WATCHED)
		return -ENOSPC;
	watched[nwatched++] = pid;
	return 0;
}

void
bench_cpu_unwatch_all(void)
{
	nwatched = 0;
}

/* The first number of a small /proc file, or -1. */
static long long
read_first_ll(const char *path)
{
	char buf[128];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strtoll(buf, NULL, 10);
}

const char *
bench_proc_stat(pid_t pid, char *buf, size_t cap)
{
	char path[64];
	ssize_t n;
	char *p;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	/* The command may hold spaces and parentheses: the fields start after
	 * the last ')'. */
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] ? p + 2 : NULL;
}

/* utime + stime of the whole process from /proc/PID/stat, in ns. */
static uint64_t
stat_cpu_ns(pid_t pid)
{
	char buf[1024];
	unsigned long long ut = 0, st = 0;
	const char *p = bench_proc_stat(pid, buf, sizeof(buf));

	/* utime and stime are fields 14 and 15; p is at field 3. */
	if (!p || sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (ut + st) * (BENCH_NS_PER_S / (uint64_t)sysconf(_SC_CLK_TCK));
}

uint64_t
bench_proc_cpu_ns(pid_t pid)
{
	char path[PATH_MAX];
	struct dirent *d;
	uint64_t sum = 0;
	int any = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((d = readdir(dir)) != NULL) {
		long long v;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid, d->d_name);
		v = read_first_ll(path);
		if (v < 0) {
			any = -1;
			break;
		}
		sum += (uint64_t)v;
		any = 1;
	}
	closedir(dir);
	return any > 0 ? sum : stat_cpu_ns(pid);
}

uint64_t
bench_self_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * BENCH_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* Everything but ourselves: children, then daemons (into *daemons). */
static uint64_t
others_cpu_ns(uint64_t *daemons)
{
	uint64_t sum = 0, d = 0;

	for (sig_atomic_t i = 0; i < nchildren; i++) {
		unsigned w = 0;

		while (w < nwatched && watched[w] != children[i])
			w++;
		if (w == nwatched) /* a watched child counts once, below */
			sum += bench_proc_cpu_ns(children[i]);
	}
	for (unsigned i = 0; i < nwatched; i++)
		d += bench_proc_cpu_ns(watched[i]);
	*daemons = d;
	return sum + d;
}

void
bench_cpu_begin(struct bench_rep_out *out)
{
	uint64_t d, others = others_cpu_ns(&d);

	/* Our own clock last here and first in bench_cpu_end(): reading the
	 * others' /proc files is not part of what is measured. */
	out->cpu_mark[0] = others;
	out->cpu_mark[1] = d;
	out->cpu_mark[2] = bench_self_cpu_ns();
	out->cpu_self_ns = 0;
}

void
bench_cpu_end(struct bench_rep_out *out, uint64_t msgs)
{
	uint64_t self = bench_self_cpu_ns() - out->cpu_mark[2], d, others = others_cpu_ns(&d);

	if (out->cpu_self_given)
		self = out->cpu_self_ns;
	out->cpu_ns = self + (others > out->cpu_mark[0] ? others - out->cpu_mark[0] : 0);
	out->cpu_daemon_ns = d > out->cpu_mark[1] ? d - out->cpu_mark[1] : 0;
	out->msgs = msgs;
}

void
bench_board_ready(struct bench_board *b)
{
	atomic_fetch_add_explicit(&b->ready, 1, memory_order_release);
}

int
bench_board_wait_ready(struct bench_board *b, uint64_t deadline_ns)
{
	struct timespec ts = { 0, 200000 };

	/* Not a measured path: a plain poll keeps the consumers' code simple. */
	while (atomic_load_explicit(&b->ready, memory_order_acquire) < b->n) {
		if (stats_now_ns() >= deadline_ns)
			return -ETIMEDOUT;
		if (bench_check_children() < 0)
			return -ECHILD;
		nanosleep(&ts, NULL);
	}
	return 0;
}

uint64_t
bench_board_count(const struct bench_board *b)
{
	uint64_t sum = 0;

	for (uint32_t i = 0; i < b->n; i++)
		sum += atomic_load_explicit(&b->slot[i].count, memory_order_relaxed);
	return sum;
}

uint64_t
bench_rep_deadline(const struct bench_opts *o)
{
	return stats_now_ns() + o->budget_ns;
}

void
bench_rate_start(struct bench_rate *r, uint64_t win_ns, uint64_t count)
{
	r->win_ns = win_ns;
	r->t0 = stats_now_ns();
	r->c0 = count;
	r->windows = 0;
}

int
bench_rate_tick(struct bench_rate *r, uint64_t count, struct stats_samples *out)
{
	uint64_t now = stats_now_ns(), dt = now - r->t0;
	int err = 0;

	if (dt < r->win_ns)
		return 0;
	if (r->windows++ > 0)
		err = stats_add(out, (uint64_t)((double)(count - r->c0) * 1e9 / (double)dt));
	r->t0 = now;
	r->c0 = count;
	return err;
}
