/* SPDX-License-Identifier: MIT */
/*
 * supervise.c: --spawn-worker. Starts the worker as the keeper's child,
 * reaps it through its pidfd (waitid P_PIDFD: the exit status goes into the
 * exit record), restarts it after any exit except a clean hand-back (at once
 * after a stable run, with exponential back-off after quick exits: the
 * policy is restart.h), and stops it when the keeper stops.
 *
 * It never decides about the table: a spawned worker asks for it over the
 * socket like any other, and its exit reaches the heir logic in handoff.c
 * through hl_k_child_exited(). It must never kill a worker it did not
 * start, and never leave a child unreaped.
 */
#include "keeper.h"

#include "util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WORKER_ARGS 32

/* argv of the worker, built once at start (no allocation in the loop). */
static char *worker_argv[MAX_WORKER_ARGS + 8];
static char words_buf[1024];

static int
executable(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Resolve --spawn-worker: a path with '/' as is; a bare name next to the
 * keeper's own binary first (a build tree or an install keep the two
 * together), then in $PATH. */
static int
resolve(struct hl_keeper *k, const char *what)
{
	char self[4096];
	size_t cap = sizeof(k->worker_path);

	if (strchr(what, '/')) {
		if (snprintf(k->worker_path, cap, "%s", what) >= (int)cap)
			return -ENAMETOOLONG;
		return executable(k->worker_path) ? 0 : -ENOENT;
	}
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (snprintf(k->worker_path, cap, "%s/%s", self, what) < (int)cap &&
			    executable(k->worker_path))
				return 0;
		}
	}
	const char *path = getenv("PATH");
	while (path && *path) {
		size_t len = strcspn(path, ":");
		if (len > 0 &&
		    snprintf(k->worker_path, cap, "%.*s/%s", (int)len, path, what) < (int)cap &&
		    executable(k->worker_path))
			return 0;
		path += len + (path[len] == ':');
	}
	return -ENOENT;
}

int
hl_k_find_worker(struct hl_keeper *k)
{
	const char *what = k->o.spawn && *k->o.spawn ? k->o.spawn : "heirloom-worker";
	int rc = resolve(k, what);
	if (rc) {
		hl__log_err("--spawn-worker: cannot find an executable '%s' (looked %s)", what,
		            strchr(what, '/') ? "at that path"
		                              : "next to heirloom-keeper and in $PATH");
		return rc;
	}
	int n = 0;
	worker_argv[n++] = k->worker_path;
	worker_argv[n++] = "--name";
	worker_argv[n++] = (char *)k->name;
	worker_argv[n++] = "--socket";
	worker_argv[n++] = k->sock_path;
	if (k->o.worker_args) {
		if (snprintf(words_buf, sizeof(words_buf), "%s", k->o.worker_args) >=
		    (int)sizeof(words_buf)) {
			hl__log_err("--worker-args: longer than %zu bytes", sizeof(words_buf) - 1);
			return -E2BIG;
		}
		for (char *save = NULL, *w = strtok_r(words_buf, " \t", &save); w;
		     w = strtok_r(NULL, " \t", &save)) {
			if (n >= MAX_WORKER_ARGS + 5) {
				hl__log_err("--worker-args: more than %d words", MAX_WORKER_ARGS);
				return -E2BIG;
			}
			worker_argv[n++] = w;
		}
	}
	worker_argv[n] = NULL;
	hl_k_backoff_init(&k->backoff, k->o.restart_min_ms, k->o.restart_max_ms,
	                  k->o.restart_stable_ms);
	return 0;
}

void
hl_k_schedule_restart(struct hl_keeper *k, uint64_t ran_ms)
{
	int64_t ms = hl_k_backoff_next(&k->backoff, ran_ms);
	/* restart_at_ns != 0 means "scheduled"; now + 0 is never 0, and the
	 * loop's timers() start the worker in this very iteration. */
	k->restart_at_ns = hl__now_ns() + (uint64_t)ms * 1000000ull;
	if (ms == 0 && ran_ms >= (uint64_t)k->o.restart_stable_ms)
		hl__log("restarting the worker at once (it ran at least --restart-stable %ld ms)",
		        (long)k->o.restart_stable_ms);
	else
		hl__log("restarting the worker in %ld ms", (long)ms);
}

int
hl_k_spawn_path(struct hl_keeper *k, const char *path, bool upgrade, pid_t *pid_out, int *pidfd_out)
{
	(void)k;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* The child: the keeper is single-threaded, so the calls below
		 * are safe between fork and exec. Undo what the keeper set up
		 * for itself: the signal mask (the worker blocks its own) and
		 * systemd's readiness socket (the keeper is the main process). */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		unsetenv("NOTIFY_SOCKET");
		unsetenv("WATCHDOG_USEC"); /* the keeper's watchdog, not the worker's */
		unsetenv("WATCHDOG_PID");
		if (upgrade)
			setenv("HEIRLOOM_UPGRADE", "1", 1);
		char *argv[MAX_WORKER_ARGS + 8];
		int n = 0;
		argv[n++] = (char *)path;
		for (int i = 1; worker_argv[i]; i++)
			argv[n++] = worker_argv[i];
		argv[n] = NULL;
		execv(path, argv);
		fprintf(stderr, "heirloom-keeper: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	/* Our child stays a zombie until we reap it, so this pidfd cannot name
	 * another process even if it already exited. */
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		int e = errno;
		hl__log_err("cannot watch worker pid %d (pidfd_open: %s): stopping it", (int)pid,
		            strerror(e));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -e;
	}
	*pid_out = pid;
	*pidfd_out = pidfd;
	return 0;
}

int
hl_k_spawn(struct hl_keeper *k)
{
	pid_t pid = 0;
	int pidfd = -1;
	k->restart_at_ns = 0;
	int rc = hl_k_spawn_path(k, k->worker_path, false, &pid, &pidfd);
	if (rc) {
		/* A start that failed is a quick exit: it backs off the same. */
		hl__log_err("cannot start the worker: %s", strerror(-rc));
		hl_k_schedule_restart(k, 0);
		return rc;
	}
	k->child = pid;
	k->child_pidfd = pidfd;
	k->child_started_ns = hl__now_ns();
	k->child_handed_back = false;
	hl_k_watch(k, pidfd, HL_K_TAG_CHILD);
	hl__log("started worker pid %d (%s)", (int)pid, k->worker_path);
	return 0;
}

void
hl_k_exit_text(int32_t code, char *buf, size_t len)
{
	if (code == HL_EXIT_UNKNOWN)
		snprintf(buf, len, "exited");
	else if (code >= 0)
		snprintf(buf, len, "exited with status %d", (int)code);
	else {
		const char *abbrev = sigabbrev_np(-code);
		if (abbrev)
			snprintf(buf, len, "killed by SIG%s", abbrev);
		else
			snprintf(buf, len, "killed by signal %d", (int)-code);
	}
}

void
hl_k_child_exited(struct hl_keeper *k)
{
	siginfo_t si;
	int32_t code = HL_EXIT_UNKNOWN;
	char how[32];

	if (!k->child)
		return;
	memset(&si, 0, sizeof(si));
	k->child_recheck_ns = 0;
	if (waitid((idtype_t)P_PIDFD, (id_t)k->child_pidfd, &si, WEXITED | WNOHANG) == 0) {
		if (si.si_pid == 0) {
			/* Not reapable yet. The pidfd stays readable, so stop
			 * watching it and look again shortly (the loop's timer). */
			hl_k_unwatch(k, k->child_pidfd);
			k->child_recheck_ns = hl__now_ns() + 50 * 1000000ull;
			return;
		}
		code = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
	}
	/* else ECHILD: someone reaped it (we are its parent: cannot happen
	 * unless SIGCHLD is SIG_IGN); it exited all the same. */
	hl_k_exit_text(code, how, sizeof(how));
	if (si.si_code == CLD_DUMPED)
		snprintf(how + strlen(how), sizeof(how) - strlen(how), " (core)");

	pid_t pid = k->child;
	uint64_t ran_ms = (hl__now_ns() - k->child_started_ns) / 1000000ull;
	bool handed_back = k->child_handed_back;
	hl_k_unwatch(k, k->child_pidfd);
	close(k->child_pidfd);
	k->child_pidfd = -1;
	k->child = 0;

	if (k->damaged || (k->owner_pid != pid && hl_k_seg_damaged(k))) {
		hl__log("worker pid %d %s", (int)pid, how);
		return; /* the keeper is stopping: no restart */
	}
	if (k->owner_pid == pid) {
		hl_k_owner_exited(k, code, how);
		if (k->damaged)
			return;
	} else if (handed_back) {
		hl__log("worker pid %d %s after handing the table back", (int)pid, how);
	} else {
		struct hl_owner o;
		hl__owner_read(k->seg.h, &o);
		hl_k_seglog(k, HL_LOG_WORKER_EXIT, code, (uint32_t)pid, o.epoch, how);
		hl__log("worker pid %d %s without taking the table", (int)pid, how);
	}

	if (hl_k_up_child_exited(k, pid))
		return; /* an upgrade's worker: upgrade.c decides (rollback) */
	if (k->stopping)
		return;
	if (handed_back) {
		/* Someone asked it to stop (SIGTERM to the worker, not to us):
		 * honour that rather than fight it. */
		k->restart_disabled = true;
		hl__log("not restarting the worker: it stopped cleanly; restart the keeper to "
		        "supervise again");
		return;
	}
	hl_k_schedule_restart(k, ran_ms);
}

void
hl_k_stop_child(struct hl_keeper *k, int sig)
{
	if (!k->child)
		return;
	/* Through the pidfd: the signal can only reach our child, even if
	 * its pid were somehow reused. */
	if (syscall(SYS_pidfd_send_signal, k->child_pidfd, sig, NULL, 0) < 0 && errno != ESRCH)
		hl__log_err("cannot signal worker pid %d: %s", (int)k->child, strerror(errno));
	else
		hl__log("sent SIG%s to worker pid %d", sigabbrev_np(sig), (int)k->child);
}
