/* SPDX-License-Identifier: MIT */
/*
 * test_access.c: access control with a second uid. The segment and the
 * keeper's control socket are created with the configured mode (and
 * group); a process of another uid outside that group can open neither,
 * and the keeper also refuses, by SO_PEERCRED, a peer that got through an
 * over-wide socket mode. A member of the group can open the segment. A
 * daemon refuses a segment name another user created first.
 *
 * The second uid is nobody (65534): each check runs in a forked child that
 * drops to it (setgroups, setgid, setuid) and reports through its exit
 * status. This needs root; as another user the tests are skipped.
 *
 * Not here: a client removing another process's observer gets -EPERM;
 * tests/test_delivery.c (test_unobserve_of_another_process_is_eperm)
 * proves it.
 */
#include "harness.h"

#include "proto.h"
#include "segment.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

/* Exit statuses of the children. */
enum { C_OK = 0, C_DROP = 10, C_UNEXPECTED };

static int
need_root(void)
{
	if (geteuid() != 0) {
		print_message("not root: cannot switch to a second uid, skipping\n");
		return 0;
	}
	return 1;
}

/* In a child: become uid/gid nobody, with GROUP as the only supplementary
 * group ((gid_t)-1: none). */
static void
drop_to_nobody(gid_t group)
{
	gid_t g = group;
	if (setgroups(group == (gid_t)-1 ? 0 : 1, &g) < 0 || setgid(NOBODY) < 0 ||
	    setuid(NOBODY) < 0 || getuid() != NOBODY)
		_exit(C_DROP);
}

/* Run FN(ARG) as nobody (with GROUP) in a child; its exit status. */
static int
as_nobody(int (*fn)(const void *), const void *arg, gid_t group)
{
	fflush(NULL);
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		drop_to_nobody(group);
		_exit(fn(arg));
	}
	int st = hl_t_wait_exit(pid, hl_t_ms(20000));
	if (st < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return st;
}

static int
open_is_eacces(const void *arg)
{
	const char *name = arg;
	struct hl_client *c = NULL;
	int fd;
	if (hl_open(name, NULL, &c) != -EACCES)
		return C_UNEXPECTED;
	/* Not even read-only: the table's contents are not for other users. */
	if (hl__seg_open_fd(name, 0, &fd) != -EACCES)
		return C_UNEXPECTED + 1;
	return C_OK;
}

static int
open_and_publish(const void *arg)
{
	const char *name = arg;
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(5000) };
	if (hl_open(name, &o, &c) != 0)
		return C_UNEXPECTED;
	if (hl_publish(c, "k", 1, "v", 1, NULL, 0) != 0 || hl_flush(c, hl_t_ms(5000)) != 0)
		return C_UNEXPECTED + 1;
	hl_close(c);
	return C_OK;
}

/* A worker serving a tiny segment NAME created with mode 0660. */
static pid_t
start_tiny_0660(const char *name)
{
	return hl_t_worker_start(name, "--max-keys", "64", "--max-observers", "64",
	                         "--max-endpoints", "4", "--heap", "65536", "--mode", "0660", NULL);
}

static void
test_other_uid_cannot_open_the_segment(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	char name[64];
	snprintf(name, sizeof(name), "%s", hl_t_name());
	pid_t w = start_tiny_0660(name);
	assert_int_equal(as_nobody(open_is_eacces, name, (gid_t)-1), C_OK);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

static void
test_group_member_can_open_the_segment(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	char name[64];
	snprintf(name, sizeof(name), "%s", hl_t_name());
	pid_t w = start_tiny_0660(name);
	/* The object's group is the creator's (root's, 0): a member may use it. */
	assert_int_equal(as_nobody(open_and_publish, name, getegid()), C_OK);
	/* With mode 0600 the same member may not. */
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/heirloom.%s", name);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(as_nobody(open_is_eacces, name, getegid()), C_OK);
	assert_int_equal(chmod(path, 0660), 0);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

static int
squat_segment(const void *arg)
{
	const char *name = arg;
	struct hl_layout_params p = {
		.max_keys = 64, .max_observers = 64, .max_endpoints = 4, .heap_bytes = 65536
	};
	int fd;
	if (hl__layout_defaults(&p) || hl__seg_create(name, &p, 0666, (gid_t)-1, &fd))
		return C_UNEXPECTED;
	close(fd);
	return C_OK;
}

/* /dev/shm is writable by everyone: another user may create the name
 * first, world-readable and writable, hoping the daemon serves it. */
static void
test_worker_refuses_a_segment_another_user_created(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	char name[64];
	snprintf(name, sizeof(name), "%s", hl_t_name());
	assert_int_equal(as_nobody(squat_segment, name, (gid_t)-1), C_OK);
	const char *argv[] = { HL_WORKER_PATH, "--standalone", "--name", name, NULL };
	pid_t w = hl_t_spawn(argv, NULL);
	assert_int_equal(hl_t_wait_exit(w, hl_t_ms(20000)), 2); /* cannot get the segment */
	hl_t_unlink(name);
}

/* ---- the keeper's control socket ---- */

struct sock_case {
	const char *path;
	int want; /* 0: connect fails with -EACCES; 1: connects, keeper answers ERR -EACCES */
};

static int
socket_refused(const void *arg)
{
	const struct sock_case *sc = arg;
	int fd;
	int rc = hl__sock_connect(sc->path, &fd);
	if (sc->want == 0)
		return rc == -EACCES ? C_OK : C_UNEXPECTED;
	if (rc != 0)
		return C_UNEXPECTED + 1;
	/* Past the file mode, the keeper checks SO_PEERCRED and answers ERR. */
	struct hl_msg m;
	hl__msg_init(&m, HL_MSG_TAKE);
	(void)hl__msg_send(fd, &m, -1);
	rc = hl__msg_recv(fd, &m, NULL, hl_t_ms(5000));
	close(fd);
	if (rc != 0 || m.type != HL_MSG_ERR || m.code != -EACCES)
		return C_UNEXPECTED + 2;
	return C_OK;
}

struct keeper_fx {
	char name[64];
	char dir[64];
	char sock[128];
	pid_t keeper;
};

static void
keeper_up(struct keeper_fx *f, const char *mode)
{
	snprintf(f->name, sizeof(f->name), "%s", hl_t_name());
	strcpy(f->dir, "/tmp/hl-access-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	/* Searchable by all: only the socket's own mode stands in the way. */
	assert_int_equal(chmod(f->dir, 0755), 0);
	snprintf(f->sock, sizeof(f->sock), "%s/k.sock", f->dir);
	const char *extra[] = { "--mode", mode, NULL };
	f->keeper = hl_t_keeper_startv(f->name, f->sock, extra, NULL);
}

static void
keeper_down(struct keeper_fx *f)
{
	kill(f->keeper, SIGTERM);
	if (hl_t_wait_exit(f->keeper, hl_t_ms(20000)) < 0)
		hl_t_kill9(f->keeper);
	unlink(f->sock);
	rmdir(f->dir);
	hl_t_unlink(f->name);
}

static void
test_other_uid_cannot_connect_to_the_keeper(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	struct keeper_fx f;
	keeper_up(&f, "0660");
	struct stat st;
	assert_int_equal(stat(f.sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	struct sock_case sc = { .path = f.sock, .want = 0 };
	assert_int_equal(as_nobody(socket_refused, &sc, (gid_t)-1), C_OK);
	/* The keeper's segment is closed to it too. */
	assert_int_equal(as_nobody(open_is_eacces, f.name, (gid_t)-1), C_OK);
	keeper_down(&f);
}

static void
test_keeper_refuses_peer_outside_group_even_through_open_socket(void **state)
{
	(void)state;
	if (!need_root())
		skip();
	struct keeper_fx f;
	keeper_up(&f, "0666"); /* a misconfiguration: anyone may connect */
	struct sock_case sc = { .path = f.sock, .want = 1 };
	assert_int_equal(as_nobody(socket_refused, &sc, (gid_t)-1), C_OK);
	keeper_down(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_other_uid_cannot_open_the_segment),
		cmocka_unit_test(test_group_member_can_open_the_segment),
		cmocka_unit_test(test_worker_refuses_a_segment_another_user_created),
		cmocka_unit_test(test_other_uid_cannot_connect_to_the_keeper),
		cmocka_unit_test(test_keeper_refuses_peer_outside_group_even_through_open_socket),
	};
	return cmocka_run_group_tests_name("access", tests, NULL, NULL);
}
