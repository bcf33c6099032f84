/* SPDX-License-Identifier: MIT */
/*
 * test_event_fd.c: hl_fd(), the descriptor an event loop polls (issue 15),
 * against a real worker: readable for an event and not before; level-
 * triggered until hl_next() says -EAGAIN, which re-arms; usable from poll,
 * epoll and select; kept across a worker SIGKILL and restart with nothing
 * lost; closed by hl_close(); a descriptor number the client reused never
 * receives the worker's datagrams; and a clear error, not a dead
 * descriptor, when the worker may not take its copy.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY "fd-key"

struct fx {
	const char *name;
	pid_t worker;
	struct hl_client *obs; /* the observer, with hl_fd() */
	struct hl_client *pub; /* a publisher (SYNC: applied on return) */
	hl_observer_id id;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->name = hl_t_name();
	f->worker = hl_t_worker_startv(f->name, hl_t_small);
	f->obs = hl_t_open(f->name, 0);
	f->pub = hl_t_open(f->name, HL_OPEN_SYNC);
	assert_int_equal(hl_observe(f->obs, KEY, strlen(KEY), 0, &f->id), 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	if (f->obs)
		hl_close(f->obs);
	if (f->pub)
		hl_close(f->pub);
	if (f->worker > 0)
		hl_t_kill9(f->worker);
	hl_t_unlink(f->name);
	free(f);
	return 0;
}

static void
publish(struct fx *f, const char *val)
{
	assert_int_equal(hl_publish(f->pub, KEY, strlen(KEY), val, strlen(val), NULL, 0), 0);
}

/* Whether FD polls readable within MS (scaled; 0 = look once). */
static int
readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n = poll(&p, 1, ms ? hl_t_ms(ms) : 0);
	return n == 1 && (p.revents & POLLIN);
}

/* Take every event now: returns how many, and asserts the last is -EAGAIN. */
static int
take_all(struct hl_client *c)
{
	struct hl_event ev;
	int n = 0, rc;
	while ((rc = hl_next(c, &ev, 0)) == 0)
		n++;
	assert_int_equal(rc, -EAGAIN);
	return n;
}

static int
count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own */
}

static void
test_fd_turns_readable_for_an_event_and_not_before(void **state)
{
	struct fx *f = *state;
	int fd = hl_fd(f->obs);
	assert_true(fd >= 0);
	assert_int_equal(hl_fd(f->obs), fd); /* the same one each time */
	assert_false(readable(fd, 0));
	/* A publish to a key nobody here observes signals nothing. */
	assert_int_equal(hl_publish(f->pub, "other", 5, "x", 1, NULL, 0), 0);
	assert_false(readable(fd, 0));
	publish(f, "v1");
	assert_true(readable(fd, 5000));
	struct hl_event ev;
	assert_int_equal(hl_next(f->obs, &ev, 0), 0);
	assert_int_equal(ev.type, HL_EV_PUT);
	assert_memory_equal(ev.new_value, "v1", 2);
	assert_int_equal(hl_next(f->obs, &ev, 0), -EAGAIN);
	assert_false(readable(fd, 0));
}

static void
test_fd_stays_readable_until_next_says_eagain_which_rearms(void **state)
{
	struct fx *f = *state;
	int fd = hl_fd(f->obs);
	assert_true(fd >= 0);
	publish(f, "a");
	publish(f, "b");
	publish(f, "c");
	assert_true(readable(fd, 5000));
	struct hl_event ev;
	assert_int_equal(hl_next(f->obs, &ev, 0), 0);
	/* Level: one event taken, the rest still there: still readable. */
	assert_true(readable(fd, 0));
	assert_int_equal(take_all(f->obs), 2);
	assert_false(readable(fd, 0));
	/* Re-armed by that -EAGAIN: the next event signals again. */
	publish(f, "d");
	assert_true(readable(fd, 5000));
	assert_int_equal(take_all(f->obs), 1);
	assert_false(readable(fd, 0));
	/* A blocking hl_next() that times out re-arms too. */
	assert_int_equal(hl_next(f->obs, &ev, 1), -ETIMEDOUT);
	publish(f, "e");
	assert_true(readable(fd, 5000));
	assert_int_equal(take_all(f->obs), 1);
}

static void
test_fd_works_with_poll_epoll_and_select(void **state)
{
	struct fx *f = *state;
	int fd = hl_fd(f->obs);
	assert_true(fd >= 0 && fd < FD_SETSIZE);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int et = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e), 0);
	e.events = EPOLLIN | EPOLLET;
	assert_int_equal(epoll_ctl(et, EPOLL_CTL_ADD, fd, &e), 0);
	struct epoll_event out;
	assert_int_equal(epoll_wait(ep, &out, 1, 0), 0);
	for (int round = 0; round < 3; round++) {
		char v[16];
		snprintf(v, sizeof(v), "r%d", round);
		publish(f, v);
		assert_int_equal(epoll_wait(ep, &out, 1, hl_t_ms(5000)), 1);
		assert_int_equal(out.data.fd, fd);
		assert_int_equal(epoll_wait(et, &out, 1, hl_t_ms(5000)), 1);
		fd_set rd;
		FD_ZERO(&rd);
		FD_SET(fd, &rd);
		struct timeval tv = { .tv_sec = 5 * hl_t_ms(1000) / 1000 };
		assert_int_equal(select(fd + 1, &rd, NULL, NULL, &tv), 1);
		assert_true(FD_ISSET(fd, &rd));
		assert_true(readable(fd, 0));
		assert_int_equal(take_all(f->obs), 1);
		assert_int_equal(epoll_wait(ep, &out, 1, 0), 0);
		assert_int_equal(epoll_wait(et, &out, 1, 0), 0);
	}
	close(ep);
	close(et);
}

static void
test_fd_keeps_loop_registration_across_worker_sigkill_and_restart(void **state)
{
	struct fx *f = *state;
	int fd = hl_fd(f->obs);
	assert_true(fd >= 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e), 0);
	struct hl_client *apub = hl_t_open(f->name, 0); /* queues with no worker */
	int sent = 0, got = 0;
	for (int kill = 0; kill < 3; kill++) {
		/* Armed (nothing waiting), then the worker dies, then requests
		 * queue while none runs: the next worker applies them and must
		 * signal through the same descriptor. */
		got += take_all(f->obs);
		hl_t_kill9(f->worker);
		for (int i = 0; i < 3; i++) {
			char v[16];
			snprintf(v, sizeof(v), "k%d-%d", kill, i);
			assert_int_equal(hl_publish(apub, KEY, strlen(KEY), v, strlen(v), NULL, 0),
			                 0);
			sent++;
		}
		f->worker = hl_t_worker_startv(f->name, hl_t_small);
		struct epoll_event out;
		while (got < sent) {
			assert_int_equal(epoll_wait(ep, &out, 1, hl_t_ms(10000)), 1);
			got += take_all(f->obs);
		}
	}
	assert_int_equal(got, sent);
	hl_close(apub);
	close(ep);
}

static void
test_fd_is_closed_by_hl_close_in_client_and_worker(void **state)
{
	struct fx *f = *state;
	/* Both fixture clients adopted (a pidfd each) before we count: a
	 * SYNC publish is a round trip. */
	assert_int_equal(hl_publish(f->pub, "other", 5, "x", 1, NULL, 0), 0);
	int before = count_fds(getpid());
	int wbefore = count_fds(f->worker);
	struct hl_client *c = hl_t_open(f->name, 0);
	int fd = hl_fd(c);
	assert_true(fd >= 0);
	assert_true(count_fds(getpid()) > before);
	assert_int_equal(hl_close(c), 0);
	assert_int_equal(count_fds(getpid()), before);
	/* The worker drops its copy (and the endpoint's pidfd) at cleanup. */
	uint64_t end = hl_t_now_ms() + (uint64_t)hl_t_ms(5000);
	while (count_fds(f->worker) != wbefore && hl_t_now_ms() < end)
		hl_t_sleep_ms(5);
	assert_int_equal(count_fds(f->worker), wbefore);
}

/* The write end hl_fd() keeps: the socket other than FD whose peer is
 * FD's (found through the inode pair, without library internals). */
static int
find_write_end(int fd)
{
	for (int n = 0; n < 1024; n++) {
		struct stat st;
		if (n == fd || fstat(n, &st) || !S_ISSOCK(st.st_mode))
			continue;
		/* A datagram sent on it arrives on FD. */
		if (send(n, "?", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
			char b;
			if (recv(fd, &b, 1, MSG_DONTWAIT) == 1 && b == '?')
				return n;
		}
	}
	return -1;
}

static void
test_reused_descriptor_number_never_gets_the_workers_datagrams(void **state)
{
	struct fx *f = *state;
	int fd = hl_fd(f->obs);
	assert_true(fd >= 0);
	int wfd = find_write_end(fd);
	assert_true(wfd >= 0);
	/* The application wrongly closes the library's write end and the
	 * number is reused by a socket of its own, with the same type. */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv), 0);
	assert_int_equal(dup2(sv[1], wfd), wfd);
	close(sv[1]);
	/* The running worker sends on its own copy, not on the number. */
	publish(f, "x1");
	assert_true(readable(fd, 5000));
	assert_int_equal(take_all(f->obs), 1);
	char b;
	assert_int_equal(recv(sv[0], &b, 1, MSG_DONTWAIT), -1);
	/* A restarted worker takes the number again, finds another socket
	 * (another inode) and refuses it. */
	hl_t_kill9(f->worker);
	f->worker = hl_t_worker_startv(f->name, hl_t_small);
	publish(f, "x2");
	struct hl_event ev;
	assert_int_equal(hl_next(f->obs, &ev, hl_t_ms(5000)), 0);
	assert_memory_equal(ev.new_value, "x2", 2);
	assert_int_equal(recv(sv[0], &b, 1, MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);
	close(sv[0]);
}

/* A worker that may not ptrace this process (another user, no
 * CAP_SYS_PTRACE) cannot take the copy: hl_fd() says -EPERM and leaves
 * nothing open; hl_next() still works. Needs root to run the worker as
 * another user; skipped otherwise. */
static void
test_fd_says_eperm_when_worker_may_not_take_copy(void **state)
{
	(void)state;
	if (geteuid() != 0 || access("/usr/bin/setpriv", X_OK) != 0) {
		skip();
	}
	const char *name = hl_t_name();
	const char *argv[32] = { "/usr/bin/setpriv",
		                 "--reuid=65534",
		                 "--regid=65534",
		                 "--clear-groups",
		                 "--inh-caps=-all",
		                 HL_WORKER_PATH,
		                 "--standalone",
		                 "--name",
		                 name,
		                 "--mode",
		                 "0666" };
	int n = 11;
	for (int i = 0; hl_t_small[i]; i++)
		argv[n++] = hl_t_small[i];
	argv[n] = NULL;
	pid_t w = hl_t_spawn(argv, NULL);
	assert_int_equal(hl_t_wait_ready(name, hl_t_ms(10000)), 0);
	struct hl_open_opts o = { .expected_owner = "nobody", .timeout_ms = hl_t_ms(5000) };
	struct hl_client *c, *p;
	assert_int_equal(hl_open(name, &o, &c), 0);
	o.flags = HL_OPEN_SYNC;
	assert_int_equal(hl_open(name, &o, &p), 0);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, KEY, strlen(KEY), 0, &id), 0);
	int before = count_fds(getpid());
	assert_int_equal(hl_fd(c), -EPERM);
	assert_int_equal(count_fds(getpid()), before);
	assert_int_equal(hl_publish(p, KEY, strlen(KEY), "v", 1, NULL, 0), 0);
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	hl_close(c);
	hl_close(p);
	hl_t_kill9(w);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fd_turns_readable_for_an_event_and_not_before,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_fd_stays_readable_until_next_says_eagain_which_rearms, setup,
		        teardown),
		cmocka_unit_test_setup_teardown(test_fd_works_with_poll_epoll_and_select, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(
		        test_fd_keeps_loop_registration_across_worker_sigkill_and_restart, setup,
		        teardown),
		cmocka_unit_test_setup_teardown(test_fd_is_closed_by_hl_close_in_client_and_worker,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_reused_descriptor_number_never_gets_the_workers_datagrams, setup,
		        teardown),
		cmocka_unit_test(test_fd_says_eperm_when_worker_may_not_take_copy),
	};
	return cmocka_run_group_tests_name("event_fd", tests, NULL, NULL);
}
