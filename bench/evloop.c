/* SPDX-License-Identifier: MIT */
/*
 * bench/evloop.c: one side of bench/evloop_run.py (issue 15): a paced or
 * burst publisher, or a C observer that waits in hl_next() (futex) or in
 * epoll on hl_fd(). Values carry the CLOCK_MONOTONIC ns of the publish;
 * the observer prints its latencies' p50/p99 and its events/s as JSON.
 *
 *   evloop pub NAME KEY N INTERVAL_US     (0 = burst)
 *   evloop obs-next|obs-epoll NAME KEY N
 */
#include <heirloom/heirloom.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* One event: a PUT's latency (value "INDEX STAMP"); a LAGGED's count; the
 * index a PUT or RESYNC carries (the run ends at the last one). */
static void
take(const struct hl_event *ev, uint64_t *lat, long *got, long *last, uint64_t *lagged,
     uint64_t *t0, uint64_t *t1)
{
	uint64_t t = now_ns();
	if (ev->type == HL_EV_LAGGED) {
		*lagged += ev->lagged;
		return;
	}
	if (!ev->has_new)
		return;
	char buf[48];
	size_t n = ev->new_len < sizeof(buf) - 1 ? ev->new_len : sizeof(buf) - 1;
	memcpy(buf, ev->new_value, n);
	buf[n] = 0;
	char *sp;
	*last = strtol(buf, &sp, 10);
	if (ev->type == HL_EV_PUT)
		lat[(*got)++] = t - strtoull(sp, NULL, 10);
	*t0 = *t0 ? *t0 : t;
	*t1 = t;
}

int
main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	const char *mode = argv[1], *name = argv[2], *key = argv[3];
	long n = strtol(argv[4], NULL, 10);
	struct hl_client *c;
	if (hl_open(name, NULL, &c))
		return 1;
	if (!strcmp(mode, "pub")) {
		long iv = argc > 5 ? strtol(argv[5], NULL, 10) : 0;
		uint64_t next = now_ns();
		for (long i = 0; i < n; i++) {
			if (iv) {
				next += (uint64_t)iv * 1000u;
				struct timespec ts = { .tv_sec = (time_t)(next / 1000000000u),
					               .tv_nsec = (long)(next % 1000000000u) };
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			}
			char v[48];
			int len = snprintf(v, sizeof(v), "%ld %" PRIu64, i, now_ns());
			if (hl_publish(c, key, strlen(key), v, (size_t)len, NULL, 0))
				return 1;
		}
		hl_flush(c, 5000);
		hl_close(c);
		return 0;
	}
	hl_observer_id id;
	if (hl_observe(c, key, strlen(key), 0, &id))
		return 1;
	int ep = -1, fd = -1;
	if (!strcmp(mode, "obs-epoll")) {
		fd = hl_fd(c);
		ep = epoll_create1(0);
		struct epoll_event e = { .events = EPOLLIN };
		if (fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e))
			return 1;
	}
	printf("ready\n");
	fflush(stdout);
	uint64_t *lat = calloc((size_t)n, sizeof(*lat));
	long got = 0, last = -1;
	uint64_t lagged = 0;
	uint64_t t0 = 0, t1 = 0;
	while (last < n - 1) {
		struct hl_event ev;
		int rc;
		if (ep >= 0) {
			struct epoll_event out;
			if (epoll_wait(ep, &out, 1, 10000) != 1)
				break;
			while (last < n - 1 && (rc = hl_next(c, &ev, 0)) == 0)
				take(&ev, lat, &got, &last, &lagged, &t0, &t1);
		} else {
			if ((rc = hl_next(c, &ev, 10000)) != 0)
				break;
			take(&ev, lat, &got, &last, &lagged, &t0, &t1);
		}
	}
	qsort(lat, (size_t)got, sizeof(*lat), cmp_u64);
	printf("{\"events\": %ld, \"lagged\": %" PRIu64 ", \"p50_us\": %.1f, \"p99_us\": %.1f, "
	       "\"events_per_s\": %.0f}\n",
	       got, lagged, got ? lat[got / 2] / 1e3 : 0, got ? lat[got * 99 / 100] / 1e3 : 0,
	       t1 > t0 ? (double)(last + 1) / ((double)(t1 - t0) / 1e9) : 0);
	hl_close(c);
	return last == n - 1 ? 0 : 1;
}
