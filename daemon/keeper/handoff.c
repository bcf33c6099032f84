/* SPDX-License-Identifier: MIT */
/*
 * handoff.c: the keeper's side of the heir protocol (proto.h). It owns the
 * decisions: who may take the table (one living worker at a time), when the
 * table comes back (a confirmed exit through a pidfd, or a clean GIVEBACK,
 * never a timeout), and the records of both in the segment header (owner
 * record, handoffs, the log ring).
 *
 * It must never take the table from a worker that may still run: a paused
 * or slow worker keeps it, and the worker's own fencing (owner_epoch checked
 * before every batch) is the second line, not the first.
 *
 * Every write here is to the header only. What a SIGKILL of the keeper at
 * each step leaves behind is said at the step; the short version is that
 * the next keeper decides from the owner record's pid + start time alone,
 * and a worker that outlives us keeps serving.
 */
#include "keeper.h"

#include "heirloom/heirloom.h"
#include "util.h"

#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <unistd.h>

void
hl_k_seglog(struct hl_keeper *k, uint32_t kind, int32_t code, uint32_t pid, uint64_t epoch,
            const char *text)
{
	hl__seglog(k->seg.h, kind, code, pid, epoch, text);
}

void
hl_k_reply_err(struct hl_kconn *c, int code, const char *fmt, ...)
{
	struct hl_msg m;
	va_list ap;

	hl__msg_init(&m, HL_MSG_ERR);
	m.code = code;
	va_start(ap, fmt);
	vsnprintf(m.text, sizeof(m.text), fmt, ap);
	va_end(ap);
	/* Non-blocking: a peer that does not read its replies loses them
	 * (and is dropped by the caller), it never stalls the keeper. */
	hl__msg_send(c->fd, &m, -1);
}

static int
reply_ok(struct hl_keeper *k, struct hl_kconn *c, uint64_t epoch, int passfd)
{
	struct hl_msg m;
	hl__msg_init(&m, HL_MSG_OK);
	m.epoch = epoch;
	m.start = k->self_start;
	return hl__msg_send(c->fd, &m, passfd);
}

bool
hl_k_pidfd_exited(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	return pidfd >= 0 && poll(&p, 1, 0) == 1;
}

static void
forget_owner(struct hl_keeper *k)
{
	if (k->owner_pidfd >= 0) {
		hl_k_unwatch(k, k->owner_pidfd);
		close(k->owner_pidfd);
	}
	k->owner_pidfd = -1;
	k->owner_pid = 0;
	k->owner_start = 0;
	for (int i = 0; i < HL_K_MAX_CONNS; i++)
		k->conns[i].owner_link = false;
}

/* Make the keeper the owner. hl__owner_write() clears worker_ready first
 * (clients stop sending to a worker that is gone), then writes the record.
 * A crash between the two leaves a dead worker named owner with
 * worker_ready 0: the next keeper finds it dead and does this again. */
static uint64_t
become_owner(struct hl_keeper *k)
{
	struct hl_shm_header *h = k->seg.h;
	return hl__owner_write(h, HL_ROLE_KEEPER, (uint32_t)getpid(), k->self_start);
}

int
hl_k_adopt_at_start(struct hl_keeper *k)
{
	struct hl_shm_header *h = k->seg.h;
	struct hl_owner o;

	/* We hold the segment's lock, so no other keeper writes the record;
	 * an odd owner_seq is a writer that died mid-write. */
	if (hl__owner_repair(h))
		hl__log_warn("repaired a torn owner record (its writer died mid-write)");
	hl__owner_read(h, &o);
	atomic_store_explicit(&h->keeper_start, k->self_start, memory_order_relaxed);
	atomic_store_explicit(&h->keeper_pid, (uint32_t)getpid(), memory_order_release);
	hl_k_seglog(k, HL_LOG_KEEPER_START, 0, (uint32_t)getpid(), o.epoch, "keeper start");

	if (o.role == HL_ROLE_WORKER && o.pid != 0) {
		/* Open the pidfd first, then check pid + start time: if the
		 * check passes, the pidfd names that very process (a pid is
		 * not reused while the process lives). */
		int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)o.pid, 0);
		if (pidfd >= 0 && hl__proc_alive((int)o.pid, o.start)) {
			k->owner_pid = (pid_t)o.pid;
			k->owner_start = o.start;
			k->owner_pidfd = pidfd;
			hl_k_watch(k, pidfd, HL_K_TAG_OWNER);
			hl__log("worker pid %u owns the table (epoch %lu): watching it as heir",
			        o.pid, (unsigned long)o.epoch);
			return 0;
		}
		if (pidfd >= 0)
			close(pidfd);
		/* It died while no keeper watched it: record that, then
		 * take the table as usual. */
		hl_k_seglog(k, HL_LOG_WORKER_EXIT, HL_EXIT_UNKNOWN, o.pid, o.epoch,
		            "exited (no keeper then)");
		hl__log("worker pid %u (epoch %lu) exited while no keeper ran", o.pid,
		        (unsigned long)o.epoch);
	}
	uint64_t epoch = become_owner(k);
	if (o.epoch == 0)
		hl__log("owning the new table (epoch %lu)", (unsigned long)epoch);
	else
		hl__log("owning the table (epoch %lu; it was %s pid %u, epoch %lu)",
		        (unsigned long)epoch, hl__role_name(o.role), o.pid, (unsigned long)o.epoch);
	return 0;
}

bool
hl_k_seg_damaged(struct hl_keeper *k)
{
	if (k->damaged)
		return true;
	uint64_t size_now = 0;
	int rc = hl__seg_intact(&k->seg, k->name, &size_now);
	if (rc != HL_ETRUNCATED && rc != -ESTALE)
		return false;
	k->damaged = rc;
	if (rc == HL_ETRUNCATED)
		hl__log_err(
		        "segment /heirloom.%s was truncated to %llu bytes (its layout needs %llu): "
		        "someone with write access to it (its owner or group: docs/security.md) "
		        "shrank it. It cannot be served again: not restarting the worker, and the "
		        "keeper stops (exit 6). What it held is lost: remove it (heirloomctl "
		        "--name %s segment remove --force) and start the keeper again",
		        k->name, (unsigned long long)size_now, (unsigned long long)k->seg.size,
		        k->name);
	else
		hl__log_err("segment /heirloom.%s was replaced by another object while served: not "
		            "restarting the worker, and the keeper stops (exit 6); find out who "
		            "replaced it, then start the keeper again",
		            k->name);
	k->stopping = true;
	k->restart_at_ns = 0;
	if (k->child)
		hl_k_stop_child(k, SIGTERM);
	return true;
}

void
hl_k_owner_exited(struct hl_keeper *k, int32_t code, const char *how)
{
	struct hl_shm_header *h = k->seg.h;
	struct hl_owner o;
	pid_t pid = k->owner_pid;

	if (hl_k_seg_damaged(k)) {
		forget_owner(k);
		hl__log("worker pid %d %s", (int)pid, how);
		return;
	}

	hl__owner_read(h, &o);
	forget_owner(k);
	if (o.role == HL_ROLE_WORKER && o.pid != (uint32_t)pid &&
	    hl__proc_alive((int)o.pid, o.start)) {
		/* The record names another living worker (one that took the
		 * table without us, e.g. --standalone): not ours to take. */
		hl__log("worker pid %d %s; the table is served by worker pid %u, left alone",
		        (int)pid, how, o.pid);
		return;
	}
	/* The record first, then the new owner: a crash between them leaves
	 * an exit record and a dead owner, which the next keeper reclaims
	 * (recording it once more, as "no keeper then"). */
	hl_k_seglog(k, HL_LOG_WORKER_EXIT, code, (uint32_t)pid, o.epoch, how);
	uint64_t epoch = become_owner(k);
	hl__log("worker pid %d %s: took the table back (epoch %lu -> %lu)", (int)pid, how,
	        (unsigned long)o.epoch, (unsigned long)epoch);
}

/* The owner's exit may be waiting in the epoll set behind this message:
 * settle it now so that a TAKE right after a crash is not refused. */
static void
settle_exited_owner(struct hl_keeper *k)
{
	if (!k->owner_pid)
		return;
	if (k->owner_pidfd >= 0 && hl_k_pidfd_exited(k->owner_pidfd))
		hl_k_owner_exited(k, HL_EXIT_UNKNOWN, "exited");
	else if (k->owner_pidfd < 0 && k->child == k->owner_pid &&
	         hl_k_pidfd_exited(k->child_pidfd))
		hl_k_child_exited(k);
}

static bool
on_take(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m)
{
	struct hl_shm_header *h = k->seg.h;
	struct hl_owner o;
	int pidfd = -1;

	if (k->stopping || hl_k_seg_damaged(k)) {
		hl_k_reply_err(c, -ESHUTDOWN, "the keeper is stopping");
		return false;
	}
	uint64_t start = hl__proc_start_time(c->pid);
	if (start == 0)
		return false; /* it asked and died: nothing to give */
	settle_exited_owner(k);
	bool keep;
	if (hl_k_up_on_take(k, c, m, &keep))
		return keep; /* an upgrade's new worker: upgrade.c */
	if (m->code != 0 && (uint32_t)m->code != h->version) {
		hl__log_warn(
		        "refused worker pid %d: its segment layout version is %d, the table's %u",
		        (int)c->pid, (int)m->code, h->version);
		hl_k_reply_err(c, HL_EVERSION,
		               "segment layout version %u here, %d in this worker: not given "
		               "(no migration in place)",
		               h->version, (int)m->code);
		return false;
	}
	hl__owner_read(h, &o);
	if (o.role == HL_ROLE_WORKER && o.pid == (uint32_t)c->pid && o.start == start &&
	    k->owner_pid == c->pid) {
		/* It is the owner already: we wrote the record and then died
		 * before replying, or the reply was lost. Answer again. */
		c->owner_link = true;
		hl__log("worker pid %d asked again: it owns the table (epoch %lu)", (int)c->pid,
		        (unsigned long)o.epoch);
		if (reply_ok(k, c, o.epoch, k->segfd))
			return false;
		return true;
	}
	if (k->owner_pid || (o.role == HL_ROLE_WORKER && hl__proc_alive((int)o.pid, o.start))) {
		uint32_t busy = k->owner_pid ? (uint32_t)k->owner_pid : o.pid;
		hl__log_warn("refused worker pid %d: the table is served by worker pid %u",
		             (int)c->pid, busy);
		hl_k_reply_err(c, -EBUSY,
		               "segment '%s' is served by worker pid %u (epoch %lu); stop it first",
		               k->name, busy, (unsigned long)o.epoch);
		return false;
	}
	if (c->pid != k->child) {
		pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
		if (pidfd < 0) {
			int e = errno;
			hl_k_reply_err(c, -e, "the keeper cannot watch pid %d: %s", (int)c->pid,
			               strerror(e));
			return false;
		}
		/* The pidfd names the process we checked only if it still
		 * runs with the same start time now. */
		if (!hl__proc_alive(c->pid, start)) {
			close(pidfd);
			return false;
		}
	}

	/* Crash after this write and before the reply: the worker sees the
	 * connection close and asks the next keeper, which finds it alive
	 * as owner (heir adoption) and answers its TAKE as a repeat (above).
	 * The new worker is not "ready" until it says so (hl__owner_write). */
	uint64_t epoch = hl__owner_write(h, HL_ROLE_WORKER, (uint32_t)c->pid, start);
	atomic_fetch_add_explicit(&h->handoffs, 1, memory_order_relaxed);
	hl_k_seglog(k, HL_LOG_HANDOFF, 0, (uint32_t)c->pid, epoch, "given");
	k->owner_pid = c->pid;
	k->owner_start = start;
	k->owner_pidfd = pidfd;
	if (pidfd >= 0)
		hl_k_watch(k, pidfd, HL_K_TAG_OWNER);
	c->owner_link = true;
	hl__log("gave the table to worker pid %d (epoch %lu)", (int)c->pid, (unsigned long)epoch);
	if (reply_ok(k, c, epoch, k->segfd)) {
		/* It owns the table on paper and never got the descriptor:
		 * it will ask again, or exit and be reclaimed by its pidfd. */
		hl__log_warn("could not answer worker pid %d; waiting for it to ask again or exit",
		             (int)c->pid);
		return false;
	}
	return true;
}

/* Whether C's peer is the worker that owns the table at the epoch M names
 * (GIVEBACK and HELLO must come from it); if not, refuses M with -ESTALE,
 * saying who owns it. *O: the owner record as read. */
static bool
peer_owns(struct hl_keeper *k, struct hl_kconn *c, const struct hl_msg *m, struct hl_owner *o)
{
	hl__owner_read(k->seg.h, o);
	if (o->role == HL_ROLE_WORKER && o->pid == (uint32_t)c->pid && k->owner_pid == c->pid &&
	    o->epoch == m->epoch)
		return true;
	hl_k_reply_err(c, -ESTALE,
	               "pid %d does not own the table at epoch %lu (owner: %s pid %u, epoch %lu)",
	               (int)c->pid, (unsigned long)m->epoch, hl__role_name(o->role), o->pid,
	               (unsigned long)o->epoch);
	return false;
}

static bool
on_giveback(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m)
{
	struct hl_owner o;

	if (!peer_owns(k, c, m, &o))
		return false;
	/* The worker has stopped its threads (it says so by sending this):
	 * nothing of it writes the table any more. Record, then take. A
	 * crash in between: the worker gets no reply, writes owner = none
	 * itself (it cannot tell a dead keeper from a slow one, but only it
	 * could be writing the record then) and exits; the next keeper
	 * takes the table from none. */
	hl_k_seglog(k, HL_LOG_HANDBACK, 0, (uint32_t)c->pid, o.epoch, "clean");
	uint64_t epoch = become_owner(k);
	if (k->child == c->pid)
		k->child_handed_back = true;
	forget_owner(k);
	hl__log("worker pid %d handed the table back cleanly (epoch %lu -> %lu)", (int)c->pid,
	        (unsigned long)o.epoch, (unsigned long)epoch);
	reply_ok(k, c, epoch, -1);
	return true;
}

static bool
on_hello(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m)
{
	struct hl_owner o;

	if (!peer_owns(k, c, m, &o))
		return false;
	c->owner_link = true;
	hl__log("worker pid %d linked up again (epoch %lu)", (int)c->pid, (unsigned long)o.epoch);
	return reply_ok(k, c, o.epoch, -1) == 0;
}

/* Handle one well-formed message from C. Returns false when the caller
 * must drop the connection (after a refusal or a broken peer). */
bool
hl_k_on_message(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m)
{
	c->last_ns = hl__now_ns();
	if (m->pid != (uint32_t)c->pid) {
		hl_k_reply_err(c, -EPERM, "the message says pid %u but the sender is pid %d",
		               m->pid, (int)c->pid);
		return false;
	}
	if ((m->type == HL_MSG_TAKE || m->type == HL_MSG_HELLO) &&
	    strcmp(hl__msg_text(m), k->name) != 0) {
		hl_k_reply_err(c, -EINVAL, "this keeper serves segment '%s', not '%.40s'", k->name,
		               m->text);
		return false;
	}
	switch (m->type) {
	case HL_MSG_TAKE: return on_take(k, c, m);
	case HL_MSG_UPGRADE: return hl_k_up_on_request(k, c, m);
	case HL_MSG_HANDOVER: return hl_k_up_on_handover(k, c, m);
	case HL_MSG_GIVEBACK: return on_giveback(k, c, m);
	case HL_MSG_HELLO: return on_hello(k, c, m);
	case HL_MSG_SNAPSHOT: return hl_k_dur_request(k, c) == 1;
	default:
		hl_k_reply_err(c, -EPROTO, "unknown request type %u", (unsigned)m->type);
		return false;
	}
}

void
hl_k_release_at_exit(struct hl_keeper *k)
{
	struct hl_shm_header *h = k->seg.h;
	struct hl_owner o;

	if (!h || k->damaged)
		return; /* a damaged segment is not touched again */
	hl__owner_read(h, &o);
	if (o.role == HL_ROLE_KEEPER && o.pid == (uint32_t)getpid()) {
		/* No keeper and no worker now: say so rather than name a dead
		 * pid. The next keeper takes it from none. */
		uint64_t epoch = hl__owner_write(h, HL_ROLE_NONE, 0, 0);
		hl__log("left the table with no owner (epoch %lu)", (unsigned long)epoch);
	}
	if (atomic_load_explicit(&h->keeper_pid, memory_order_relaxed) == (uint32_t)getpid()) {
		atomic_store_explicit(&h->keeper_pid, 0, memory_order_relaxed);
		atomic_store_explicit(&h->keeper_start, 0, memory_order_relaxed);
	}
}
