/* SPDX-License-Identifier: MIT */
/*
 * test_trust.c: a client trusts only the segment its service owns (issue
 * 24), and every other way in is checked the same way.
 *
 * /dev/shm and /tmp are writable by every local user. The tests play three
 * of them, each a forked child that drops to fixed uids no account uses
 * (found at run time): A, a user of the service; B, an ordinary user who
 * shares a group with A and squats the segment name with a standalone
 * worker of its own (mode 0666); S, the service's own system user (uid <=
 * 999), whose group A is in. Children report through their exit status;
 * stderr of each goes to a file the test reads. Root is needed to switch
 * uids: as another user the tests are skipped.
 *
 * Proved here:
 *  - the rule itself, each condition alone (hl__trust_owner);
 *  - B's squatted segment: A's hl_open() and `heirloomctl get` refuse it
 *    with HL_EUNTRUSTED, name the owner found and expected and the fix,
 *    and A maps nothing of it; HEIRLOOM_OWNER=B or expected_owner accepts
 *    it (explicit trust); the real service refuses to start on it;
 *  - once B removed it, the service started as S serves A with no
 *    configuration (hl_open, publish, get; heirloomctl get);
 *  - a keeper whose socket directory is refused (another user's, or
 *    writable by others) leaves no segment behind; one that fails after
 *    creating the segment removes it, and one that fails on a segment it
 *    found leaves that segment alone;
 *  - a worker refuses a keeper socket another user planted at its path;
 *  - a daemon refuses a config file another user can write.
 */
#include "harness.h"

#include "segment.h"
#include "trust.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Exit statuses of the children. */
enum { C_OK = 0, C_DROP = 10, C_UNEXPECTED };

/* A local user a child becomes. */
struct who {
	uid_t uid;
	gid_t gid;
	gid_t groups[2];
	int ngroups;
};

struct fx {
	char dir[64]; /* scratch, root's, 0755 */
	char name[64];
	char err[128]; /* stderr of the last child */
	char out[128]; /* stdout of the last heirloomctl */
	struct who a, b, s;
	gid_t shared; /* A and B are both in it: "users" */
	pid_t squatter, service, listener;
};

static int
need_root(void)
{
	if (geteuid() != 0) {
		print_message("not root: cannot switch to other uids, skipping\n");
		return 0;
	}
	return 1;
}

/* An id no account or group uses, from FROM moving by STEP. */
static uid_t
unused_id(uid_t from, int step)
{
	for (uid_t id = from;; id = (uid_t)((int)id + step))
		if (!getpwuid(id) && !getgrgid((gid_t)id))
			return id;
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/hl-trust-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(chmod(f->dir, 0755), 0);
	snprintf(f->name, sizeof(f->name), "%s", hl_t_name());
	snprintf(f->err, sizeof(f->err), "%s/stderr", f->dir);
	snprintf(f->out, sizeof(f->out), "%s/stdout", f->dir);
	uid_t a = unused_id(64700, 1), b = unused_id(a + 1, 1);
	f->shared = (gid_t)unused_id(b + 1, 1);
	uid_t s = unused_id(HL_SYSTEM_UID_MAX - 20, -1);
	f->a = (struct who){ a, a, { f->shared, (gid_t)s }, 2 };
	f->b = (struct who){ b, f->shared, { f->shared }, 1 };
	f->s = (struct who){ s, (gid_t)s, { (gid_t)s }, 1 };
	f->squatter = f->service = f->listener = -1;
	*state = f;
	return 0;
}

static void
stop(pid_t *p)
{
	if (*p > 0) {
		kill(*p, SIGTERM);
		if (hl_t_wait_exit(*p, hl_t_ms(20000)) < 0)
			hl_t_kill9(*p);
	}
	*p = -1;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	stop(&f->squatter);
	stop(&f->service);
	stop(&f->listener);
	hl_t_unlink(f->name);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd) != 0)
		print_message("could not remove %s\n", f->dir);
	free(f);
	return 0;
}

/* In a child: become W, then die with the parent (the death signal is
 * cleared by the change of credentials, so it is set after). */
static void
become(const struct who *w)
{
	if (setgroups((size_t)w->ngroups, w->groups) < 0 || setgid(w->gid) < 0 ||
	    setuid(w->uid) < 0 || getuid() != w->uid || geteuid() != w->uid)
		_exit(C_DROP);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void
redirect(int to, const char *path)
{
	int fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)
	              : open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || dup2(fd, to) < 0)
		_exit(C_DROP);
}

/* Run ARGV as W with ENV (NULL-terminated "K=V", may be NULL) added,
 * stdout to OUT and stderr to ERR (NULL: /dev/null). Returns the pid.
 * The program is opened while still root and run through that descriptor:
 * W need not be able to reach the build tree (a clone in /root, mode 0700,
 * as on a fresh Debian where root runs scripts/test). */
static pid_t
spawn_as(const struct who *w, const char *const *argv, const char *const *env, const char *out,
         const char *err)
{
	fflush(NULL);
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		redirect(1, out);
		redirect(2, err);
		for (int i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		int exe = open(argv[0], O_PATH | O_CLOEXEC);
		become(w);
		if (exe >= 0)
			fexecve(exe, (char *const *)argv, environ);
		_exit(127);
	}
	return pid;
}

/* Run FN(ARG) as W in a child, stderr to ERR; its exit status. */
static int
call_as(const struct who *w, int (*fn)(const void *), const void *arg, const char *err)
{
	fflush(NULL);
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		redirect(2, err);
		become(w);
		_exit(fn(arg));
	}
	int st = hl_t_wait_exit(pid, hl_t_ms(20000));
	if (st < 0)
		hl_t_kill9(pid);
	return st;
}

static int
run_wait(pid_t pid)
{
	int st = hl_t_wait_exit(pid, hl_t_ms(20000));
	if (st < 0)
		hl_t_kill9(pid);
	return st;
}

/* A standalone worker for NAME as W with MODE; waits until it serves. */
static pid_t
worker_as(const struct who *w, const char *name, const char *mode, const char *err)
{
	const char *argv[] = { HL_WORKER_PATH,
		               "--standalone",
		               "--name",
		               name,
		               "--mode",
		               mode,
		               "--max-keys",
		               "64",
		               "--max-observers",
		               "64",
		               "--max-endpoints",
		               "8",
		               "--heap",
		               "65536",
		               NULL };
	pid_t pid = spawn_as(w, argv, NULL, NULL, err);
	assert_int_equal(hl_t_wait_ready(name, hl_t_ms(20000)), 0);
	return pid;
}

static int
file_has(const char *path, const char *needle)
{
	char buf[8192];
	FILE *fp = fopen(path, "r");
	if (!fp)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

static int
segment_exists(const char *name)
{
	int fd, rc = hl__seg_open_fd(name, 0, &fd);
	if (rc == 0)
		close(fd);
	return rc != -ENOENT;
}

/* ---- the rule, each condition alone ---- */

static void
test_rule_each_condition_alone(void **state)
{
	struct fx *f = *state;
	struct hl_trust t;
	gid_t mine = getegid(), other = f->shared; /* root is not in it */
	uid_t sys = f->s.uid, user = f->b.uid;

	unsetenv("HEIRLOOM_OWNER");
	assert_int_equal(hl__trust_init(&t, NULL, NULL, 0), 0);
	assert_int_equal(t.named, 0);
	/* root and the caller itself, whatever the group and mode */
	assert_int_equal(hl__trust_owner(&t, 0, other, 0666), 0);
	assert_int_equal(hl__trust_owner(&t, geteuid(), other, 0666), 0);
	/* a system user of one of my groups, closed to others */
	assert_int_equal(hl__trust_owner(&t, sys, mine, 0660), 0);
	assert_int_equal(hl__trust_owner(&t, sys, mine, 0666), HL_EUNTRUSTED);
	assert_int_equal(hl__trust_owner(&t, sys, other, 0660), HL_EUNTRUSTED);
	/* an ordinary user sharing my group: the squatter */
	assert_int_equal(hl__trust_owner(&t, user, mine, 0660), HL_EUNTRUSTED);
	assert_int_equal(hl__trust_owner(&t, HL_SYSTEM_UID_MAX + 1, mine, 0600), HL_EUNTRUSTED);
	assert_int_equal(hl__trust_owner(&t, HL_SYSTEM_UID_MAX, mine, 0600), 0);

	/* A named owner is accepted whatever the mode; naming one turns the
	 * system-user rule off. */
	char spec[64];
	snprintf(spec, sizeof(spec), "%u", (unsigned)user);
	assert_int_equal(hl__trust_init(&t, spec, NULL, 0), 0);
	assert_int_equal(hl__trust_owner(&t, user, other, 0666), 0);
	assert_int_equal(hl__trust_owner(&t, sys, mine, 0660), HL_EUNTRUSTED);
	assert_int_equal(hl__trust_owner(&t, 0, other, 0666), 0);
	/* a group, with ':' */
	snprintf(spec, sizeof(spec), "root,:%u", (unsigned)other);
	assert_int_equal(hl__trust_init(&t, spec, NULL, 0), 0);
	assert_int_equal(hl__trust_owner(&t, user, other, 0666), 0);
	assert_int_equal(hl__trust_owner(&t, user, mine, 0666), HL_EUNTRUSTED);
	/* a user name; a name that is only a group names the group */
	if (getpwnam("nobody")) {
		assert_int_equal(hl__trust_init(&t, "nobody", NULL, 0), 0);
		assert_int_equal(hl__trust_owner(&t, getpwnam("nobody")->pw_uid, other, 0666), 0);
	}
	struct group *g = getgrgid(mine);
	if (g && !getpwnam(g->gr_name)) {
		assert_int_equal(hl__trust_init(&t, g->gr_name, NULL, 0), 0);
		assert_int_equal(hl__trust_owner(&t, user, mine, 0666), 0);
	}

	/* Mistakes fail closed, naming the entry. */
	char err[256] = "";
	assert_int_equal(hl__trust_init(&t, "root,no-such-user-hl24", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no-such-user-hl24"));
	assert_int_equal(hl__trust_init(&t, ",", NULL, 0), -EINVAL);

	/* The environment, and the option over the environment. */
	setenv("HEIRLOOM_OWNER", spec, 1);
	assert_int_equal(hl__trust_init(&t, NULL, NULL, 0), 0);
	assert_string_equal(t.source, "HEIRLOOM_OWNER");
	assert_int_equal(hl__trust_owner(&t, user, other, 0666), 0);
	assert_int_equal(hl__trust_init(&t, "root", NULL, 0), 0);
	assert_string_equal(t.source, "expected_owner");
	assert_int_equal(hl__trust_owner(&t, user, other, 0666), HL_EUNTRUSTED);
	unsetenv("HEIRLOOM_OWNER");
}

/* ---- a squatted name ---- */

static int
publish_evil(const void *arg)
{
	struct hl_client *c;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(5000) };
	if (hl_open(arg, &o, &c))
		return C_UNEXPECTED;
	int rc = hl_publish(c, "config/db", 9, "postgres://evil", 15, NULL, 0);
	if (rc == 0)
		rc = hl_flush(c, hl_t_ms(5000));
	hl_close(c);
	return rc ? C_UNEXPECTED + 1 : C_OK;
}

/* Whether this process maps anything of segment NAME. */
static int
maps_segment(const char *name)
{
	char line[512], want[128];
	snprintf(want, sizeof(want), "/dev/shm/heirloom.%s", name);
	FILE *fp = fopen("/proc/self/maps", "r");
	int found = 0;
	while (fp && fgets(line, sizeof(line), fp))
		found |= strstr(line, want) != NULL;
	if (fp)
		fclose(fp);
	return found;
}

static int
open_is_refused(const void *arg)
{
	struct hl_client *c = NULL;
	if (hl_open(arg, NULL, &c) != HL_EUNTRUSTED || c)
		return C_UNEXPECTED;
	if (maps_segment(arg))
		return C_UNEXPECTED + 1;
	return C_OK;
}

struct trusted_case {
	const char *name;
	const char *expected_owner; /* NULL: from the environment */
	const char *want;           /* the value of config/db */
};

static int
open_and_get(const void *arg)
{
	const struct trusted_case *tc = arg;
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(5000),
		                  .expected_owner = tc->expected_owner };
	char buf[64];
	size_t len = 0;
	if (hl_open(tc->name, &o, &c))
		return C_UNEXPECTED;
	int rc = hl_get(c, "config/db", 9, buf, sizeof(buf), &len, NULL);
	hl_close(c);
	if (rc || len != strlen(tc->want) || memcmp(buf, tc->want, len))
		return C_UNEXPECTED + 1;
	return C_OK;
}

static int
ctl_get_as(struct fx *f, const struct who *w, const char *owner_env, int json)
{
	char env[64];
	const char *envp[] = { env, NULL };
	snprintf(env, sizeof(env), "HEIRLOOM_OWNER=%s", owner_env ? owner_env : "");
	const char *argv[] = { HL_CTL_PATH, "--name",    f->name,
		               "get",       "config/db", json ? "--json" : NULL,
		               NULL };
	return run_wait(spawn_as(w, argv, envp, f->out, f->err));
}

static void
test_squatted_segment_is_refused_and_explicit_trust_accepts_it(void **state)
{
	struct fx *f = *state;
	if (!need_root())
		skip();
	char b_uid[16], expect[160];
	snprintf(b_uid, sizeof(b_uid), "%u", (unsigned)f->b.uid);

	/* B squats the name, world-writable, in a group A is in too. */
	f->squatter = worker_as(&f->b, f->name, "0666", NULL);
	assert_int_equal(call_as(&f->b, publish_evil, f->name, NULL), C_OK);

	/* A's hl_open: refused, nothing mapped, and it says why and how. */
	assert_int_equal(call_as(&f->a, open_is_refused, f->name, f->err), C_OK);
	snprintf(expect, sizeof(expect), "owned by uid %u", (unsigned)f->b.uid);
	assert_true(file_has(f->err, expect));
	assert_true(file_has(f->err, "expected root"));
	snprintf(expect, sizeof(expect), "HEIRLOOM_OWNER=%u", (unsigned)f->b.uid);
	assert_true(file_has(f->err, expect));

	/* heirloomctl get: exit 3, no value, the owner and the fix. */
	assert_int_equal(ctl_get_as(f, &f->a, NULL, 0), 3);
	assert_false(file_has(f->out, "evil"));
	assert_true(file_has(f->err, "refusing segment"));
	snprintf(expect, sizeof(expect), "owned by uid %u", (unsigned)f->b.uid);
	assert_true(file_has(f->err, expect));
	assert_true(file_has(f->err, "segment remove --force"));
	assert_int_equal(ctl_get_as(f, &f->a, NULL, 1), 3);
	assert_true(file_has(f->out, "\"error\":\"HL_EUNTRUSTED\""));

	/* Naming another owner does not help B. */
	assert_int_equal(ctl_get_as(f, &f->a, "root", 0), 3);

	/* Explicit trust: HEIRLOOM_OWNER=B, or expected_owner. */
	assert_int_equal(ctl_get_as(f, &f->a, b_uid, 0), 0);
	assert_true(file_has(f->out, "postgres://evil"));
	struct trusted_case tc = { f->name, b_uid, "postgres://evil" };
	assert_int_equal(call_as(&f->a, open_and_get, &tc, NULL), C_OK);
	setenv("HEIRLOOM_OWNER", b_uid, 1); /* inherited by the child */
	tc.expected_owner = NULL;
	assert_int_equal(call_as(&f->a, open_and_get, &tc, NULL), C_OK);
	unsetenv("HEIRLOOM_OWNER");

	/* The real service does not start on it either. */
	const char *argv[] = { HL_WORKER_PATH, "--standalone", "--name", f->name, NULL };
	assert_int_equal(run_wait(spawn_as(&f->s, argv, NULL, NULL, f->err)), 2);
	assert_true(file_has(f->err, "belongs to another user"));
}

static int
open_publish_get(const void *arg)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(5000) };
	char buf[64];
	size_t len = 0;
	if (hl_open(arg, &o, &c))
		return C_UNEXPECTED;
	int rc = hl_publish(c, "config/db", 9, "postgres://real", 15, NULL, 0);
	if (rc == 0)
		rc = hl_flush(c, hl_t_ms(5000));
	if (rc == 0)
		rc = hl_get(c, "config/db", 9, buf, sizeof(buf), &len, NULL);
	hl_close(c);
	if (rc || len != 15 || memcmp(buf, "postgres://real", 15))
		return C_UNEXPECTED + 1;
	return C_OK;
}

static void
test_service_as_its_own_user_serves_its_group_once_the_squat_is_gone(void **state)
{
	struct fx *f = *state;
	if (!need_root())
		skip();
	f->squatter = worker_as(&f->b, f->name, "0666", NULL);
	stop(&f->squatter);
	/* B removes its segment (the fix the refusal names). */
	const char *rm[] = { HL_CTL_PATH, "--name", f->name, "segment", "remove", "--force", NULL };
	assert_int_equal(run_wait(spawn_as(&f->b, rm, NULL, NULL, NULL)), 0);
	assert_false(segment_exists(f->name));

	/* The service, as its own system user, group S, mode 0660; A is in
	 * group S and has configured nothing. */
	f->service = worker_as(&f->s, f->name, "0660", NULL);
	unsetenv("HEIRLOOM_OWNER");
	assert_int_equal(call_as(&f->a, open_publish_get, f->name, f->err), C_OK);
	assert_int_equal(ctl_get_as(f, &f->a, NULL, 0), 0);
	assert_true(file_has(f->out, "postgres://real"));
	/* B, not in group S, is kept out by the mode (the group is S's). */
	assert_int_equal(call_as(&f->b, open_publish_get, f->name, NULL), C_UNEXPECTED);
}

/* ---- the keeper's start ---- */

static int
keeper_run(struct fx *f, const char *sock)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = HL_KEEPER_PATH;
	argv[n++] = "--foreground";
	argv[n++] = "--name";
	argv[n++] = f->name;
	argv[n++] = "--socket";
	argv[n++] = sock;
	for (int i = 0; hl_t_small[i]; i++)
		argv[n++] = hl_t_small[i];
	argv[n] = NULL;
	unlink(f->err);
	return run_wait(hl_t_spawn(argv, f->err));
}

static void
test_keeper_with_a_refused_socket_directory_leaves_no_segment(void **state)
{
	struct fx *f = *state;
	if (!need_root())
		skip();
	char dir[128], sock[160];
	snprintf(dir, sizeof(dir), "%s/planted", f->dir);
	snprintf(sock, sizeof(sock), "%s/k.sock", dir);

	/* Another user's directory. */
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(chown(dir, f->b.uid, f->b.gid), 0);
	assert_int_equal(keeper_run(f, sock), 3);
	assert_true(file_has(f->err, "cannot use the directory"));
	assert_false(segment_exists(f->name));

	/* Ours, but writable by everyone and not sticky. */
	assert_int_equal(chown(dir, 0, 0), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(keeper_run(f, sock), 3);
	assert_true(file_has(f->err, "cannot use the directory"));
	assert_false(segment_exists(f->name));

	/* The same directory made safe: the keeper starts (the refusals
	 * above were the directory's, not something else's). */
	assert_int_equal(chmod(dir, 0755), 0);
	const char *extra[] = { NULL };
	pid_t k = hl_t_keeper_startv(f->name, sock, extra, NULL);
	assert_true(segment_exists(f->name));
	kill(k, SIGTERM);
	assert_int_equal(run_wait(k), 0);
}

static void
test_keeper_failing_after_creating_the_segment_removes_it(void **state)
{
	struct fx *f = *state;
	if (!need_root())
		skip();
	/* A directory that passes, holding a file that is not a socket: the
	 * keeper fails at bind, after creating the segment. */
	char sock[160];
	snprintf(sock, sizeof(sock), "%s/k.sock", f->dir);
	int fd = open(sock, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(keeper_run(f, sock), 3);
	assert_true(file_has(f->err, "is not a socket"));
	assert_true(file_has(f->err, "removed the segment"));
	assert_false(segment_exists(f->name));

	/* A segment it found (and did not create) stays. */
	struct hl_layout_params p = {
		.max_keys = 64, .max_observers = 64, .max_endpoints = 4, .heap_bytes = 65536
	};
	assert_int_equal(hl__layout_defaults(&p), 0);
	assert_int_equal(hl__seg_create(f->name, &p, 0660, (gid_t)-1, &fd), 0);
	close(fd);
	assert_int_equal(keeper_run(f, sock), 3);
	assert_false(file_has(f->err, "removed the segment"));
	assert_true(segment_exists(f->name));
}

/* ---- the worker's keeper ---- */

static int
listen_forever(const void *arg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = arg;
	if (strlen(path) >= sizeof(sa.sun_path))
		return C_UNEXPECTED;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0)
		return C_UNEXPECTED;
	for (;;)
		pause();
}

static void
test_worker_refuses_a_keeper_socket_another_user_planted(void **state)
{
	struct fx *f = *state;
	if (!need_root())
		skip();
	char dir[128], sock[160];
	snprintf(dir, sizeof(dir), "%s/b", f->dir);
	snprintf(sock, sizeof(sock), "%s/k.sock", dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(chown(dir, f->b.uid, f->b.gid), 0);
	fflush(NULL);
	f->listener = hl_t_fork();
	assert_true(f->listener >= 0);
	if (f->listener == 0) {
		become(&f->b);
		_exit(listen_forever(sock));
	}
	struct stat st;
	for (int i = 0; i < hl_t_ms(20000) / 10 && stat(sock, &st) != 0; i++)
		usleep(10000);
	assert_int_equal(stat(sock, &st), 0);

	const char *argv[] = { HL_WORKER_PATH, "--name", f->name, "--socket", sock, NULL };
	unlink(f->err);
	assert_int_equal(run_wait(hl_t_spawn(argv, f->err)), 2);
	assert_true(file_has(f->err, "refusing the keeper"));
	assert_false(segment_exists(f->name));
}

/* ---- the daemons' config ---- */

static void
test_daemon_refuses_a_config_file_others_can_write(void **state)
{
	struct fx *f = *state;
	if (!need_root())
		skip();
	char conf[160];
	snprintf(conf, sizeof(conf), "%s/w.conf", f->dir);
	FILE *fp = fopen(conf, "w");
	assert_non_null(fp);
	fputs("[worker]\nmode = 0666\n", fp);
	fclose(fp);
	const char *argv[] = { HL_WORKER_PATH, "--standalone", "--name", f->name,
		               "--config",     conf,           NULL };

	assert_int_equal(chmod(conf, 0666), 0);
	unlink(f->err);
	assert_int_equal(run_wait(hl_t_spawn(argv, f->err)), 1);
	assert_true(file_has(f->err, "refusing it"));
	assert_false(segment_exists(f->name));

	assert_int_equal(chmod(conf, 0644), 0);
	assert_int_equal(chown(conf, f->b.uid, f->b.gid), 0);
	unlink(f->err);
	assert_int_equal(run_wait(hl_t_spawn(argv, f->err)), 1);
	assert_true(file_has(f->err, "refusing it"));
	assert_false(segment_exists(f->name));

	/* Root's and closed: read (the worker starts with its mode). */
	assert_int_equal(chown(conf, 0, 0), 0);
	f->service = hl_t_spawn(argv, NULL);
	assert_int_equal(hl_t_wait_ready(f->name, hl_t_ms(20000)), 0);
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/heirloom.%s", f->name);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rule_each_condition_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_squatted_segment_is_refused_and_explicit_trust_accepts_it, setup,
		        teardown),
		cmocka_unit_test_setup_teardown(
		        test_service_as_its_own_user_serves_its_group_once_the_squat_is_gone, setup,
		        teardown),
		cmocka_unit_test_setup_teardown(
		        test_keeper_with_a_refused_socket_directory_leaves_no_segment, setup,
		        teardown),
		cmocka_unit_test_setup_teardown(
		        test_keeper_failing_after_creating_the_segment_removes_it, setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_worker_refuses_a_keeper_socket_another_user_planted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daemon_refuses_a_config_file_others_can_write,
		                                setup, teardown),
	};
	return cmocka_run_group_tests_name("trust", tests, NULL, NULL);
}
