/*
 * harness.c: test fixtures that run the real daemons as processes.
 */
#include "harness.h"

#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *const hl_t_small[] = {"--max-keys", "4096", "--max-observers", "65536",
                                  "--max-endpoints", "64", "--heap", "4194304", NULL};

const char *
hl_t_name(void)
{
	static char buf[64];
	static int n;
	snprintf(buf, sizeof(buf), "t%d_%d", (int)getpid(), n++);
	hl__seg_unlink(buf);
	return buf;
}

int
hl_t_ms(int ms)
{
	const char *m = getenv("HL_TEST_TIMEOUT_MULTIPLIER");
	int k = m ? atoi(m) : 1;
	return ms * (k > 0 ? k : 1);
}

static void
sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

int
hl_t_wait_ready(const char *name, int ms)
{
	for (int waited = 0; waited <= ms; waited += 10) {
		int fd;
		if (hl__seg_open_fd(name, 0, &fd) == 0) {
			struct hl_seg s;
			if (hl__seg_map_ro(fd, &s) == 0) {
				int ready = atomic_load(&s.h->worker_ready) &&
				            atomic_load(&s.h->owner_role) == HL_ROLE_WORKER;
				hl__seg_unmap(&s);
				close(fd);
				if (ready)
					return 0;
			} else {
				close(fd);
			}
		}
		sleep_ms(10);
	}
	return -1;
}

pid_t
hl_t_worker_startv(const char *name, const char *const *extra)
{
	const char *argv[64];
	int n = 0;
	argv[n++] = HL_WORKER_PATH;
	argv[n++] = "--standalone";
	argv[n++] = "--name";
	argv[n++] = name;
	for (int i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (!getenv("HL_TEST_VERBOSE")) {
			int fd = open("/dev/null", O_WRONLY);
			dup2(fd, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (hl_t_wait_ready(name, hl_t_ms(10000)) != 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fail_msg("worker for %s did not become ready", name);
	}
	return pid;
}

pid_t
hl_t_worker_start(const char *name, ...)
{
	const char *extra[48];
	int n = 0;
	va_list ap;
	va_start(ap, name);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && n < 47)
		extra[n++] = a;
	va_end(ap);
	extra[n] = NULL;
	return hl_t_worker_startv(name, extra);
}

int
hl_t_wait_exit(pid_t pid, int ms)
{
	for (int waited = 0; waited <= ms; waited += 5) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0)
			return -1;
		sleep_ms(5);
	}
	return -1;
}

int
hl_t_worker_stop(pid_t pid)
{
	kill(pid, SIGTERM);
	int st = hl_t_wait_exit(pid, hl_t_ms(20000));
	if (st < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return st;
}

void
hl_t_kill9(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

struct hl_client *
hl_t_open(const char *name, uint32_t flags)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = {.flags = flags, .timeout_ms = hl_t_ms(10000)};
	int rc = hl_open(name, &o, &c);
	if (rc)
		fail_msg("hl_open(%s): %s", name, hl_strerror(rc));
	return c;
}

void
hl_t_unlink(const char *name)
{
	hl__seg_unlink(name);
}
