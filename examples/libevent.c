/* SPDX-License-Identifier: MIT */
/*
 * examples/libevent.c: heirloom in a libevent loop (an EV_READ|EV_PERSIST
 * event on hl_fd()). Observes KEY and prints each change until COUNT
 * events came.
 *
 *   libevent NAME KEY [COUNT]
 *
 * The descriptor is level-triggered: on EV_READ, call hl_next(c, &ev, 0)
 * until -EAGAIN, which re-arms it. Free the event before hl_close(), which
 * closes the descriptor.
 */
#include <heirloom/heirloom.h>

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct app {
	struct hl_client *c;
	struct event_base *base;
	long count, seen;
	int failed;
};

static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	struct app *a = arg;
	if (!(what & EV_READ)) {
		a->failed = 1;
		event_base_loopbreak(a->base);
		return;
	}
	struct hl_event ev;
	int rc;
	while ((rc = hl_next(a->c, &ev, 0)) == 0) {
		if (ev.type == HL_EV_PUT)
			printf("%.*s = %.*s (revision %llu)\n", (int)ev.key_len,
			       (const char *)ev.key, (int)ev.new_len, (const char *)ev.new_value,
			       (unsigned long long)ev.revision);
		a->seen++;
	}
	fflush(stdout);
	if (rc != -EAGAIN) {
		fprintf(stderr, "hl_next: %s\n", hl_strerror(rc));
		a->failed = 1;
	}
	if (rc != -EAGAIN || (a->count >= 0 && a->seen >= a->count))
		event_base_loopbreak(a->base);
}

int
main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s NAME KEY [COUNT]\n", argv[0]);
		return 2;
	}
	struct app a = { .count = argc > 3 ? strtol(argv[3], NULL, 10) : -1 };
	int rc = hl_open(argv[1], NULL, &a.c);
	if (rc) {
		fprintf(stderr, "hl_open: %s\n", hl_strerror(rc));
		return 1;
	}
	hl_observer_id id;
	int fd = (rc = hl_observe(a.c, argv[2], strlen(argv[2]), 0, &id)) ? rc : hl_fd(a.c);
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", rc ? "hl_observe" : "hl_fd", hl_strerror(fd));
		hl_close(a.c);
		return 1;
	}
	a.base = event_base_new();
	struct event *e =
	        a.base ? event_new(a.base, fd, EV_READ | EV_PERSIST, on_readable, &a) : NULL;
	if (!e || event_add(e, NULL)) {
		fprintf(stderr, "libevent: cannot watch the descriptor\n");
		hl_close(a.c);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	event_base_dispatch(a.base);
	event_free(e);
	event_base_free(a.base);
	hl_close(a.c);
	return a.failed;
}
