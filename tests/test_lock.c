/* SPDX-License-Identifier: MIT */
/*
 * test_lock.c: the worker's lock-order witness (daemon/worker/lock.h),
 * built here with HL_DEBUG on whatever the build's HL_ASSERTS: taking the
 * ranks in order passes, and an inverted order or a second lock of one
 * rank aborts at the lock site, before the mutex is touched (a deadlock
 * that happens once in a while becomes an abort every time).
 */
#include "harness.h"

#include "lock.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t shard_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t shard_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ep = PTHREAD_MUTEX_INITIALIZER;

/* Run FN in a child (stderr muted); returns its wait status. */
static int
in_child(void (*fn)(void))
{
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0)
			dup2(null, STDERR_FILENO);
		fn();
		_exit(0);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static void
test_lock_ranks_in_order_pass(void **state)
{
	(void)state;
	hl_w_lock(&shard_a, HL_W_RANK_SHARD);
	assert_true(hl_w_rank_held(HL_W_RANK_SHARD));
	hl_w_lock(&ep, HL_W_RANK_EP);
	assert_true(hl_w_rank_held(HL_W_RANK_EP));
	hl_w_unlock(&ep, HL_W_RANK_EP);
	hl_w_unlock(&shard_a, HL_W_RANK_SHARD);
	assert_false(hl_w_rank_held(HL_W_RANK_SHARD));
	/* The endpoint's lock alone, then a shard's after its release. */
	hl_w_lock(&ep, HL_W_RANK_EP);
	hl_w_unlock(&ep, HL_W_RANK_EP);
	hl_w_lock(&shard_b, HL_W_RANK_SHARD);
	hl_w_unlock(&shard_b, HL_W_RANK_SHARD);
}

static void
ep_then_shard(void)
{
	hl_w_lock(&ep, HL_W_RANK_EP);
	hl_w_lock(&shard_a, HL_W_RANK_SHARD);
}

static void
test_lock_inverted_order_aborts(void **state)
{
	(void)state;
	int st = in_child(ep_then_shard);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGABRT);
}

static void
two_shards(void)
{
	hl_w_lock(&shard_a, HL_W_RANK_SHARD);
	hl_w_lock(&shard_b, HL_W_RANK_SHARD);
}

static void
test_lock_two_shards_at_once_aborts(void **state)
{
	(void)state;
	int st = in_child(two_shards);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGABRT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lock_ranks_in_order_pass),
		cmocka_unit_test(test_lock_inverted_order_aborts),
		cmocka_unit_test(test_lock_two_shards_at_once_aborts),
	};
	return cmocka_run_group_tests_name("lock", tests, NULL, NULL);
}
