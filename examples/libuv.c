/* SPDX-License-Identifier: MIT */
/*
 * examples/libuv.c: heirloom in a libuv loop (uv_poll on hl_fd()). Observes
 * KEY and prints each change until COUNT events came.
 *
 *   libuv NAME KEY [COUNT]
 *
 * uv_poll is level-triggered here as epoll is: on UV_READABLE, call
 * hl_next(c, &ev, 0) until -EAGAIN. Stop the poll handle (and close it)
 * before hl_close(), which closes the descriptor.
 */
#include <heirloom/heirloom.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct app {
	struct hl_client *c;
	uv_poll_t poll;
	long count, seen;
	int failed;
};

static void
on_readable(uv_poll_t *h, int status, int events)
{
	struct app *a = h->data;
	if (status < 0 || !(events & UV_READABLE)) {
		a->failed = 1;
		uv_poll_stop(h);
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
		uv_poll_stop(h); /* the loop ends: nothing else is active */
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
	uv_loop_t *loop = uv_default_loop();
	uv_poll_init(loop, &a.poll, fd);
	a.poll.data = &a;
	uv_poll_start(&a.poll, UV_READABLE, on_readable);
	printf("ready\n");
	fflush(stdout);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&a.poll, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	hl_close(a.c);
	return a.failed;
}
