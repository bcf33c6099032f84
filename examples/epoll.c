/* SPDX-License-Identifier: MIT */
/*
 * examples/epoll.c: heirloom in an epoll loop. Observes KEY and prints each
 * change until COUNT events came, waiting in epoll_wait() on hl_fd() beside
 * standard input (any other descriptor of the program would do).
 *
 *   epoll NAME KEY [COUNT]
 *
 * The pattern: add hl_fd() for EPOLLIN once; when it is readable, call
 * hl_next(c, &ev, 0) until it returns -EAGAIN (that re-arms it).
 */
#include <heirloom/heirloom.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s NAME KEY [COUNT]\n", argv[0]);
		return 2;
	}
	long count = argc > 3 ? strtol(argv[3], NULL, 10) : -1;
	struct hl_client *c;
	int rc = hl_open(argv[1], NULL, &c);
	if (rc) {
		fprintf(stderr, "hl_open: %s\n", hl_strerror(rc));
		return 1;
	}
	hl_observer_id id;
	int fd = (rc = hl_observe(c, argv[2], strlen(argv[2]), 0, &id)) ? rc : hl_fd(c);
	if (fd < 0) {
		fprintf(stderr, "%s: %s (%s)\n", rc ? "hl_observe" : "hl_fd", hl_strerror(fd),
		        hl_err_name(fd));
		hl_close(c);
		return 1;
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
	printf("ready\n");
	fflush(stdout);
	long seen = 0;
	while (count < 0 || seen < count) {
		struct epoll_event out[4];
		int n = epoll_wait(ep, out, 4, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			if (out[i].data.fd != fd)
				continue;
			struct hl_event ev;
			while ((rc = hl_next(c, &ev, 0)) == 0) {
				if (ev.type == HL_EV_PUT)
					printf("%.*s = %.*s (revision %llu)\n", (int)ev.key_len,
					       (const char *)ev.key, (int)ev.new_len,
					       (const char *)ev.new_value,
					       (unsigned long long)ev.revision);
				else
					printf("%.*s: event type %d\n", (int)ev.key_len,
					       (const char *)ev.key, (int)ev.type);
				seen++;
			}
			if (rc != -EAGAIN) {
				fprintf(stderr, "hl_next: %s\n", hl_strerror(rc));
				count = seen; /* stop */
			}
		}
		fflush(stdout);
	}
	close(ep);
	hl_close(c); /* closes fd too: it was removed from nothing else */
	return 0;
}
