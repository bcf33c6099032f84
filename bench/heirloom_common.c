/* SPDX-License-Identifier: MIT */
/*
 * heirloom_common.c: the worker under test and client opening for the
 * heirloom_* benchmarks (see heirloom_common.h). It owns at most one worker
 * process it started itself; it must never leave it running.
 */
#include "heirloom_common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stats.h"

#define MAX_ARGS 32

static char seg_name[64];
static char cmd_buf[PATH_MAX + 256];
static char *cmd_argv[MAX_ARGS + 1];
static pid_t own_worker; /* a worker we started, 0 = none */
static int own_segment;  /* we chose the name: remove the segment at the end */
static int keeper;
static pid_t main_pid;

static void
split_cmd(const char *cmd)
{
	int n = 0;
	size_t len = strnlen(cmd, sizeof(cmd_buf) - 1);
	memcpy(cmd_buf, cmd, len);
	cmd_buf[len] = '\0';
	for (char *save = NULL, *t = strtok_r(cmd_buf, " ", &save); t && n < MAX_ARGS;
	     t = strtok_r(NULL, " ", &save))
		cmd_argv[n++] = t;
	cmd_argv[n] = NULL;
}

static void
kill_own_worker(int sig)
{
	if (!own_worker)
		return;
	kill(own_worker, sig);
	uint64_t deadline = stats_now_ns() + 5 * BENCH_NS_PER_S;
	for (;;) {
		pid_t r = waitpid(own_worker, NULL, WNOHANG);
		if (r == own_worker || (r < 0 && errno == ECHILD))
			break;
		if (stats_now_ns() > deadline) {
			kill(own_worker, SIGKILL);
			waitpid(own_worker, NULL, 0);
			break;
		}
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	own_worker = 0;
}

static void
at_exit(void)
{
	if (getpid() == main_pid)
		hlb_teardown();
}

static int
spawn_worker(void)
{
	/* Not bench_fork(): the harness's reap of a repetition's consumers
	 * must not wait for the worker. PDEATHSIG ties it to us instead. */
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != main_pid)
			_exit(1);
		/* The worker logs every start and stop: keep the table readable. */
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0 && !getenv("HEIRLOOM_BENCH_VERBOSE"))
			dup2(fd, STDERR_FILENO);
		execv(cmd_argv[0], cmd_argv);
		_exit(127);
	}
	own_worker = pid;
	return 0;
}

int
hlb_setup(void)
{
	const char *name = getenv("HEIRLOOM_BENCH_NAME");
	const char *cmd = getenv("HEIRLOOM_BENCH_WORKER");
	const char *kp = getenv("HEIRLOOM_BENCH_KEEPER");
	main_pid = getpid();
	keeper = kp && strcmp(kp, "1") == 0;
	atexit(at_exit);
	if (name && *name) {
		snprintf(seg_name, sizeof(seg_name), "%s", name);
		if (cmd && *cmd)
			split_cmd(cmd);
		return 0;
	}
	/* Alone: our own standalone worker, next to this binary. */
	char self[PATH_MAX], wcmd[PATH_MAX + 128];
	self[0] = '\0';
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -errno;
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	snprintf(seg_name, sizeof(seg_name), "bench-%d", (int)main_pid);
	snprintf(wcmd, sizeof(wcmd), "%s/heirloom-worker --standalone --name %s %s", self, seg_name,
	         HLB_CAPACITIES);
	split_cmd(wcmd);
	own_segment = 1;
	keeper = 0;
	return spawn_worker();
}

const char *
hlb_name(void)
{
	return seg_name;
}

int
hlb_have_keeper(void)
{
	return keeper;
}

int
hlb_open(uint32_t flags, uint64_t deadline_ns, struct hl_client **out)
{
	struct hl_open_opts o = { .flags = flags, .timeout_ms = 2000 };
	int rc;
	for (;;) {
		rc = hl_open(seg_name, &o, out);
		if (rc == 0)
			break;
		if (rc != -ENOENT && rc != HL_ETRUNCATED && rc != HL_EBADMAGIC)
			return rc;
		if (stats_now_ns() > deadline_ns)
			return -ETIMEDOUT;
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
	}
	/* Serving means answering: one observe round trip. */
	for (;;) {
		hl_observer_id id;
		rc = hl_observe(*out, "hb/ping", 7, 0, &id);
		if (rc == 0) {
			hl_unobserve(*out, id);
			return 0;
		}
		if (stats_now_ns() > deadline_ns || (rc != -ETIMEDOUT && rc != -EAGAIN)) {
			hl_close(*out);
			*out = NULL;
			return rc;
		}
	}
}

pid_t
hlb_worker_pid(struct hl_client *c)
{
	struct hl_stats st;
	if (hl_stats(c, &st) || st.owner_role != 2)
		return 0;
	return st.owner_pid;
}

int
hlb_worker_kill(struct hl_client *c)
{
	pid_t pid = hlb_worker_pid(c);
	if (pid <= 0)
		return -ESRCH;
	if (kill(pid, SIGKILL) < 0)
		return -errno;
	if (pid == own_worker) {
		waitpid(pid, NULL, 0);
		own_worker = 0;
	}
	return pid;
}

int
hlb_worker_restart(void)
{
	if (keeper)
		return 0;
	if (!cmd_argv[0])
		return -ENOEXEC;
	/* Whoever started the killed worker (scripts/bench) reaps it. */
	return spawn_worker();
}

/* The parent of PID (/proc/PID/stat field 4), 0 when unreadable. */
static pid_t
parent_of(pid_t pid)
{
	char buf[512];
	int ppid = 0;
	const char *p = bench_proc_stat(pid, buf, sizeof(buf));
	if (!p || sscanf(p, "%*c %d", &ppid) != 1)
		return 0;
	return ppid;
}

void
hlb_watch_daemons(struct hl_client *c)
{
	pid_t w = hlb_worker_pid(c);
	if (w <= 0) {
		fprintf(stderr, "bench: no worker pid: its CPU is not counted\n");
		return;
	}
	bench_cpu_watch(w);
	if (keeper && parent_of(w) > 1)
		bench_cpu_watch(parent_of(w));
}

uint64_t
hlb_rss_bytes(pid_t pid)
{
	char path[64], line[256];
	uint64_t kb = 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu kB", (unsigned long *)&kb) == 1)
			break;
	fclose(f);
	return kb * 1024u;
}

void
hlb_teardown(void)
{
	kill_own_worker(SIGTERM);
	if (own_segment) {
		char shm[96];
		snprintf(shm, sizeof(shm), "/heirloom.%s", seg_name);
		shm_unlink(shm);
		own_segment = 0;
	}
}
