/* SPDX-License-Identifier: MIT */
/*
 * Samples and their summaries (see stats.h for the contracts). This file owns
 * the sample arrays and the files it writes; it must never exit the process,
 * since its callers still have children to reap when something fails here.
 */
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

uint64_t
stats_now_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid pointer on Linux. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void
stats_init(struct stats_samples *s)
{
	s->v = NULL;
	s->n = 0;
	s->cap = 0;
}

void
stats_fini(struct stats_samples *s)
{
	free(s->v);
	stats_init(s);
}

int
stats_reserve(struct stats_samples *s, size_t n)
{
	size_t cap = s->cap ? s->cap : 1024;
	uint64_t *v;

	if (n > SIZE_MAX / sizeof(*v) - s->n)
		return -ENOMEM;
	if (s->n + n <= s->cap)
		return 0;
	while (cap < s->n + n)
		cap = cap > SIZE_MAX / 2 / sizeof(*v) ? s->n + n : cap * 2;
	v = realloc(s->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->v = v;
	s->cap = cap;
	return 0;
}

int
stats_add(struct stats_samples *s, uint64_t v)
{
	if (s->n == s->cap) {
		int err = stats_reserve(s, 1);
		if (err < 0)
			return err;
	}
	s->v[s->n++] = v;
	return 0;
}

int
stats_merge(struct stats_samples *dst, const struct stats_samples *src)
{
	int err;

	if (src->n == 0)
		return 0;
	err = stats_reserve(dst, src->n);
	if (err < 0)
		return err;
	memcpy(dst->v + dst->n, src->v, src->n * sizeof(*src->v));
	dst->n += src->n;
	return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank: the ceil(p * n)-th smallest, 1-based, of n sorted values.
 * p is given in tenths of a percent so that p99.9 is exact in integers. */
static uint64_t
rank(const uint64_t *sorted, size_t n, unsigned permille)
{
	size_t r = (n * permille + 999) / 1000;

	if (r == 0)
		r = 1;
	return sorted[r - 1];
}

static uint64_t *
sorted_copy(const struct stats_samples *s)
{
	uint64_t *c = malloc(s->n * sizeof(*c));

	if (!c)
		return NULL;
	memcpy(c, s->v, s->n * sizeof(*c));
	qsort(c, s->n, sizeof(*c), cmp_u64);
	return c;
}

int
stats_summarize(const struct stats_samples *s, struct stats_summary *out)
{
	long double total = 0;
	uint64_t *c;

	if (s->n == 0)
		return -EINVAL;
	c = sorted_copy(s);
	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++)
		total += c[i];
	out->n = s->n;
	out->min = c[0];
	out->p50 = rank(c, s->n, 500);
	out->p90 = rank(c, s->n, 900);
	out->p99 = rank(c, s->n, 990);
	out->p999 = rank(c, s->n, 999);
	out->max = c[s->n - 1];
	out->mean = (double)(total / s->n);
	out->cpu_ns = out->cpu_min_ns = out->cpu_max_ns = out->cpu_daemon_ns = -1;
	free(c);
	return 0;
}

uint64_t
stats_median(const struct stats_samples *s)
{
	uint64_t *c, m;

	if (s->n == 0)
		return 0;
	c = sorted_copy(s);
	if (!c)
		return 0;
	m = rank(c, s->n, 500);
	free(c);
	return m;
}

double
stats_spread(const uint64_t *medians, size_t n, const char *label, FILE *warn)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	double ratio;

	if (n < 2)
		return 1.0;
	for (size_t i = 0; i < n; i++) {
		uint64_t m = medians[i] ? medians[i] : 1;
		lo = m < lo ? m : lo;
		hi = m > hi ? m : hi;
	}
	ratio = (double)hi / (double)lo;
	if (ratio > STATS_SPREAD_WARN && warn)
		fprintf(warn,
		        "warning: %s: medians of %zu repetitions spread %.2fx (> %.2f): "
		        "the machine was probably busy; rerun before trusting this row\n",
		        label ? label : "?", n, ratio, STATS_SPREAD_WARN);
	return ratio;
}

void
stats_print_header(FILE *f)
{
	fprintf(f, "%-16s | %-14s | %8s | %10s | %10s | %10s | %10s | %-5s | %s\n", "scenario",
	        "variant", "n", "p50", "p90", "p99", "p99.9", "unit", "cpu us/msg");
	fprintf(f, "-----------------+----------------+----------+------------+------------+"
	           "------------+------------+-------+-----------\n");
}

void
stats_print_row(FILE *f, const char *scenario, const char *variant, enum stats_kind kind,
                const char *unit, const struct stats_summary *sum)
{
	/* Latency is kept in ns but read in us: the mechanisms compared here sit
	 * between 1 us and a few ms, where ns digits are only noise. */
	char cpu[48] = "-";

	if (sum->cpu_ns >= 0)
		snprintf(cpu, sizeof(cpu), "%.3g (%.3g-%.3g)", sum->cpu_ns / 1e3,
		         sum->cpu_min_ns / 1e3, sum->cpu_max_ns / 1e3);
	if (kind == STATS_LATENCY)
		fprintf(f,
		        "%-16s | %-14s | %8zu | %10.2f | %10.2f | %10.2f | %10.2f | us    | %s\n",
		        scenario, variant, sum->n, sum->p50 / 1e3, sum->p90 / 1e3, sum->p99 / 1e3,
		        sum->p999 / 1e3, cpu);
	else
		fprintf(f, "%-16s | %-14s | %8zu | %10.4g | %10.4g | %10.4g | %10.4g | %-5s | %s\n",
		        scenario, variant, sum->n, (double)sum->p50, (double)sum->p90,
		        (double)sum->p99, (double)sum->p999, unit, cpu);
}

int
stats_write_raw(const struct stats_samples *s, const char *path)
{
	FILE *f = fopen(path, "w");
	int err = 0;

	if (!f)
		return -errno;
	for (size_t i = 0; i < s->n; i++) {
		if (fprintf(f, "%llu\n", (unsigned long long)s->v[i]) < 0) {
			err = -EIO;
			break;
		}
	}
	if (fclose(f) != 0 && err == 0)
		err = -errno;
	return err;
}

/* Names that are ours (scenario, variant, unit) never need escaping, but a
 * stray quote or control character must not break the file. */
static void
json_string(char *dst, size_t cap, const char *src)
{
	size_t j = 0;

	for (; *src && j + 1 < cap; src++) {
		unsigned char ch = (unsigned char)*src;
		dst[j++] = (ch == '"' || ch == '\\' || ch < 0x20) ? '_' : (char)ch;
	}
	dst[j] = '\0';
}

static int
format_object(char *buf, size_t cap, const char *scenario, const char *variant,
              enum stats_kind kind, const char *unit, const struct stats_summary *sum,
              unsigned reps, double spread)
{
	char sc[96], va[96], un[32], kr[96], cpu[160] = "";
	struct utsname u;
	int n;

	if (sum->cpu_ns >= 0)
		snprintf(cpu, sizeof(cpu),
		         ",\"cpu_ns\":%.1f,\"cpu_min_ns\":%.1f,\"cpu_max_ns\":%.1f,"
		         "\"cpu_daemon_ns\":%.1f",
		         sum->cpu_ns, sum->cpu_min_ns, sum->cpu_max_ns, sum->cpu_daemon_ns);
	json_string(sc, sizeof(sc), scenario);
	json_string(va, sizeof(va), variant);
	json_string(un, sizeof(un), kind == STATS_LATENCY ? "ns" : unit);
	json_string(kr, sizeof(kr), uname(&u) == 0 ? u.release : "unknown");
	n = snprintf(buf, cap,
	             "{\"scenario\":\"%s\",\"variant\":\"%s\",\"kind\":\"%s\",\"unit\":\"%s\","
	             "\"n\":%zu,\"reps\":%u,\"min\":%llu,\"p50\":%llu,\"p90\":%llu,"
	             "\"p99\":%llu,\"p999\":%llu,\"max\":%llu,\"mean\":%.1f,\"spread\":%.3f,"
	             "\"nproc\":%ld,\"kernel\":\"%s\",\"time\":%lld%s}",
	             sc, va, kind == STATS_LATENCY ? "latency" : "rate", un, sum->n, reps,
	             (unsigned long long)sum->min, (unsigned long long)sum->p50,
	             (unsigned long long)sum->p90, (unsigned long long)sum->p99,
	             (unsigned long long)sum->p999, (unsigned long long)sum->max, sum->mean, spread,
	             sysconf(_SC_NPROCESSORS_ONLN), kr, (long long)time(NULL), cpu);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return n;
}

static int
write_all(int fd, const char *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t w = pwrite(fd, buf, len, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

/* Offset of the closing ']' of the array in fd, looking back over trailing
 * whitespace only; -EINVAL when the file does not end like a JSON array. */
static off_t
closing_bracket(int fd, off_t size)
{
	char tail[64];
	off_t start = size > (off_t)sizeof(tail) ? size - (off_t)sizeof(tail) : 0;
	ssize_t got = pread(fd, tail, (size_t)(size - start), start);

	if (got < 0)
		return -errno;
	for (ssize_t i = got - 1; i >= 0; i--) {
		if (tail[i] == ']')
			return start + i;
		if (tail[i] != '\n' && tail[i] != ' ' && tail[i] != '\t' && tail[i] != '\r')
			break;
	}
	return -EINVAL;
}

int
stats_append_json(const char *path, const char *scenario, const char *variant, enum stats_kind kind,
                  const char *unit, const struct stats_summary *sum, unsigned reps, double spread)
{
	char buf[1024];
	struct stat st;
	off_t at;
	int fd, n, err;
	size_t len;

	n = format_object(buf + 2, sizeof(buf) - 6, scenario, variant, kind, unit, sum, reps,
	                  spread);
	if (n < 0)
		return n;
	if (!path)
		path = STATS_DEFAULT_JSON;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	/* Several benchmark processes may append to one summary at once. */
	if (flock(fd, LOCK_EX) < 0) {
		err = -errno;
		goto out_close;
	}
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out_close;
	}
	if (st.st_size == 0) {
		at = 0;
		memcpy(buf, "[\n", 2);
	} else {
		at = closing_bracket(fd, st.st_size);
		if (at < 0) {
			err = (int)at;
			goto out_close;
		}
		/* Write over the whitespace before ']' too, so that every object
		 * keeps a line of its own; a comma only after an object. */
		char prev = '\n';
		while (at > 0 && (prev == '\n' || prev == ' ' || prev == '\t' || prev == '\r')) {
			if (pread(fd, &prev, 1, at - 1) != 1) {
				err = -EIO;
				goto out_close;
			}
			if (prev == '\n' || prev == ' ' || prev == '\t' || prev == '\r')
				at--;
		}
		memcpy(buf, prev == '[' ? " \n" : ",\n", 2);
	}
	len = 2 + (size_t)n;
	memcpy(buf + len, "\n]\n", 3);
	len += 3;
	/* The new text starts where ']' was, so until this one write the file
	 * still holds the old, valid array; only a crash inside it could cut it. */
	err = write_all(fd, buf, len, at);
out_close:
	close(fd);
	return err;
}
