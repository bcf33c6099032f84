/* SPDX-License-Identifier: MIT */
/*
 * watchdog.c: "a hung worker is a dead worker" (issue 22), and the
 * keeper's own systemd watchdog ping.
 *
 * Hang detection. Every serving thread of the worker (the monitor, each
 * shard thread) stores a heartbeat in the segment on every turn of its
 * loop, and every turn is bounded (layout.h: monitor_beat_ns,
 * hl_shm_shard.beat_ns). Each check, this module notes per thread the last
 * time it made progress: a new heartbeat, or work in its counters (a
 * shard thread inside one long batch of requests applies them without
 * coming back to its loop: slow, not hung). A thread without progress for
 * --hang-timeout is a hang, and one is enough (a deadlocked shard leaves
 * its keys unserved however well the others run): log what was seen,
 * write an HL_LOG_HUNG record, SIGKILL the worker through its pidfd, and
 * nothing more. The exit then takes the normal crash path (handoff.c:
 * the confirmed exit takes the table back; supervise.c restarts the
 * worker), so a hang costs no more than a crash and changes no rule of
 * the heir protocol.
 *
 * It must never kill a worker for a pause it caused or that is not the
 * worker's: the watch of a worker starts when the keeper first sees it
 * own the table (a previous worker's beats never count), and a keeper
 * that was itself stopped judges by the heartbeats' own times, not by how
 * long ago it last looked.
 *
 * The keeper's systemd watchdog: WATCHDOG=1 every half of WATCHDOG_USEC,
 * sent from the keeper's one loop (timers()), so a keeper that stops
 * turning stops pinging. Single-threaded, like the rest of the keeper.
 */
#include "keeper.h"

#include "heirloom/heirloom.h"
#include "notify.h"
#include "progress.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NTHREADS (1 + HL_SHARDS_MAX) /* 0 = the monitor, 1 + i = shard i */

static struct {
	uint64_t timeout_ns;  /* 0 = hang detection off */
	uint64_t interval_ns; /* between checks */
	uint64_t next_check_ns;
	pid_t pid; /* the worker watched, 0 = none */
	uint64_t start;
	pid_t killed; /* the worker we SIGKILLed: wait for its exit */
	uint64_t beat[NTHREADS], work[NTHREADS], progress[NTHREADS];
	uint64_t sd_usec; /* $WATCHDOG_USEC for us, 0 = off */
	uint64_t next_ping_ns;
} wd;

void
hl_k_wd_init(struct hl_keeper *k)
{
	uint64_t ms = k->o.hang_timeout_ms > 0 ? (uint64_t)k->o.hang_timeout_ms : 0;
	wd.timeout_ns = ms * 1000000ull;
	/* Eight looks per timeout: a hang is acted on within 1/8 of the
	 * timeout after it is one; never busier than every 10 ms. */
	wd.interval_ns = wd.timeout_ns / 8;
	if (wd.interval_ns < 10000000ull)
		wd.interval_ns = 10000000ull;
	/* For heirloomctl, which says "hung" past it (relaxed: a setting). */
	atomic_store_explicit(&k->seg.h->hang_timeout_ms, ms, memory_order_relaxed);
	wd.sd_usec = hl__sd_watchdog_usec();
	if (ms)
		hl__log("hang detection: a worker thread without progress for %lu ms is killed",
		        (unsigned long)ms);
	else
		hl__log("hang detection off (--hang-timeout 0)");
	if (wd.sd_usec)
		hl__log("systemd watchdog: pinging every %lu ms",
		        (unsigned long)(wd.sd_usec / 2000));
}

uint64_t
hl_k_wd_next_ns(const struct hl_keeper *k)
{
	uint64_t next = UINT64_MAX;
	if (wd.sd_usec)
		next = wd.next_ping_ns;
	/* The coarse clock may lag the loop's clock by a tick: checks are
	 * scheduled on CLOCK_MONOTONIC like every other timer. */
	if (wd.timeout_ns && k->owner_pid && wd.next_check_ns < next)
		next = wd.next_check_ns;
	return next;
}

/* A thread's work counters: anything it counts while it serves. */
static uint64_t
work_of(const struct hl_shm_header *h, unsigned t)
{
	return t == 0 ? hl__monitor_work(h) : hl__shard_work(&h->shard[t - 1].c);
}

static uint64_t
beat_of(const struct hl_shm_header *h, unsigned t)
{
	return t == 0 ? atomic_load_explicit(&h->monitor_beat_ns, memory_order_relaxed)
	              : atomic_load_explicit(&h->shard[t - 1].beat_ns, memory_order_relaxed);
}

static void
thread_name(unsigned t, char *buf, size_t len)
{
	if (t == 0)
		snprintf(buf, len, "monitor");
	else
		snprintf(buf, len, "shard %u", t - 1);
}

static unsigned
nthreads(const struct hl_shm_header *h)
{
	return 1 + (h->shards < HL_SHARDS_MAX ? h->shards : HL_SHARDS_MAX);
}

/* Start watching the current owner: every thread counts from now. */
static void
watch_new(struct hl_keeper *k, uint64_t now)
{
	const struct hl_shm_header *h = k->seg.h;
	wd.pid = k->owner_pid;
	wd.start = k->owner_start;
	for (unsigned t = 0; t < nthreads(h); t++) {
		wd.beat[t] = beat_of(h, t);
		wd.work[t] = work_of(h, t);
		wd.progress[t] = now;
	}
}

static void
kill_hung(struct hl_keeper *k, unsigned t, uint64_t age_ns)
{
	struct hl_shm_header *h = k->seg.h;
	char who[24], ages[512];
	size_t used = 0;
	uint64_t now = hl__coarse_ns();
	ages[0] = '\0';
	for (unsigned i = 0; i < nthreads(h) && used < sizeof(ages) - 32; i++) {
		char n[24];
		thread_name(i, n, sizeof(n));
		uint64_t b = beat_of(h, i);
		int w = b == HL_BEAT_STOPPED
		                ? snprintf(ages + used, sizeof(ages) - used, "%s%s stopped",
		                           i ? ", " : "", n)
		                : snprintf(ages + used, sizeof(ages) - used, "%s%s %lu ms",
		                           i ? ", " : "", n,
		                           (unsigned long)((now > b ? now - b : 0) / 1000000u));
		if (w > 0)
			used += (size_t)w;
	}
	thread_name(t, who, sizeof(who));
	uint64_t ms = age_ns / 1000000u;
	struct hl_owner o;
	hl__owner_read(h, &o);
	/* The record first: whoever sees the worker gone (heirloomctl, a
	 * test) finds why in the segment's log. */
	hl_k_seglog(k, HL_LOG_HUNG, ms > INT32_MAX ? INT32_MAX : (int32_t)ms, (uint32_t)wd.pid,
	            o.epoch, who);
	hl__log_err("worker pid %d is hung: its %s thread made no progress for %lu ms "
	            "(--hang-timeout %lu ms; heartbeat ages: %s): killing it (SIGKILL)",
	            (int)wd.pid, who, (unsigned long)ms, (unsigned long)(wd.timeout_ns / 1000000u),
	            ages);
	wd.killed = wd.pid;
	/* Through a pidfd, never by pid: only that very process can get it. */
	if (k->child == wd.pid && k->owner_pidfd < 0) {
		hl_k_stop_child(k, SIGKILL);
	} else if (k->owner_pidfd >= 0 &&
	           syscall(SYS_pidfd_send_signal, k->owner_pidfd, SIGKILL, NULL, 0) < 0 &&
	           errno != ESRCH) {
		hl__log_err("cannot kill worker pid %d: %s", (int)wd.pid, strerror(errno));
		wd.killed = 0; /* try again next check */
	}
}

static void
check(struct hl_keeper *k, uint64_t now)
{
	struct hl_shm_header *h = k->seg.h;
	if (!k->owner_pid || k->stopping) {
		/* No worker, or we asked it to stop (the stop timeout bounds
		 * that). A worker seen again is watched afresh. */
		wd.pid = 0;
		return;
	}
	if (k->owner_pid != wd.pid || k->owner_start != wd.start)
		watch_new(k, now);
	if (wd.killed == wd.pid)
		return; /* SIGKILLed: its confirmed exit comes through the pidfd */
	unsigned worst = 0;
	uint64_t worst_age = 0;
	for (unsigned t = 0; t < nthreads(h); t++) {
		uint64_t b = beat_of(h, t), w = work_of(h, t);
		if (b == HL_BEAT_STOPPED) {
			/* Stopped cleanly, handing back: not serving, not hung. */
			wd.progress[t] = now;
		} else {
			/* A new beat counts at its own time (it is never later
			 * than now on one clock): a keeper that was itself held
			 * up does not see a pause that was its own. Work counted
			 * since the last check counts as now. */
			if (b != wd.beat[t] && b > wd.progress[t])
				wd.progress[t] = b > now ? now : b;
			if (w != wd.work[t])
				wd.progress[t] = now;
		}
		wd.beat[t] = b;
		wd.work[t] = w;
		atomic_store_explicit(&h->progress_ns[t], wd.progress[t], memory_order_relaxed);
		uint64_t age = now - wd.progress[t];
		if (age > worst_age) {
			worst_age = age;
			worst = t;
		}
	}
	if (worst_age > wd.timeout_ns)
		kill_hung(k, worst, worst_age);
}

void
hl_k_wd_tick(struct hl_keeper *k)
{
	uint64_t mono = hl__now_ns();
	if (wd.sd_usec && mono >= wd.next_ping_ns) {
		hl__sd_notify("WATCHDOG=1");
		wd.next_ping_ns = mono + wd.sd_usec * 500u;
	}
	if (!wd.timeout_ns || mono < wd.next_check_ns)
		return;
	wd.next_check_ns = mono + wd.interval_ns;
	check(k, hl__coarse_ns());
}
