/* SPDX-License-Identifier: MIT */
/*
 * upgrade.c: heirloomctl upgrade, the keeper's side. It starts the new
 * worker, asks the serving one to stop after its batch (YIELD), writes
 * the owner record from the old worker straight to the new one when the
 * old says its threads are joined (HANDOVER), and waits for the new one's
 * worker_ready. On any failure the new worker is stopped, the table comes
 * back through the crash path (a confirmed exit), and the previous binary
 * serves again: the parked old worker runs its own binary again
 * (RESUME), or the supervisor restarts the old path. The steps and what
 * a SIGKILL at each leaves: docs/architecture.md, "Upgrade".
 *
 * It must never give the table to the new worker while the old one may
 * still apply a request: only on HANDOVER (the old worker's threads are
 * joined) or after the old worker's confirmed exit. It never takes the
 * table from a worker that may run: a failed new worker is killed and its
 * exit, not a timeout, gives the table back (supervise.c, handoff.c).
 */
#include "keeper.h"

#include "heirloom/heirloom.h"
#include "util.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* While the new worker recovers, or the old one comes back, the keeper
 * looks at worker_ready this often. */
#define POLL_NS (2 * 1000000ull)

static struct hl_kconn *
conn_at(struct hl_keeper *k, int slot)
{
	return slot >= 0 && k->conns[slot].fd >= 0 ? &k->conns[slot] : NULL;
}

static int
slot_of(const struct hl_keeper *k, const struct hl_kconn *c)
{
	return (int)(c - k->conns);
}

static void
send_type(struct hl_keeper *k, int slot, enum hl_msg_type type, int32_t code, uint64_t epoch,
          const char *text)
{
	struct hl_kconn *c = conn_at(k, slot);
	if (!c)
		return;
	struct hl_msg m;
	hl__msg_init(&m, type);
	m.code = code;
	m.epoch = epoch;
	/* Cut to the message's text field (a bounded copy: snprintf's "%s"
	 * drew -Wformat-truncation in release builds). */
	size_t n = text ? strnlen(text, sizeof(m.text) - 1) : 0;
	memcpy(m.text, text ? text : "", n);
	m.text[n] = '\0';
	hl__msg_send(c->fd, &m, -1);
}

static void
unhold(struct hl_keeper *k, int *slot)
{
	struct hl_kconn *c = conn_at(k, *slot);
	if (c)
		c->held = false;
	*slot = -1;
}

void
hl_k_up_init(struct hl_keeper *k)
{
	k->up = (struct hl_k_upgrade){
		.ctl = -1, .new_conn = -1, .old_conn = -1, .new_pidfd = -1, .old_pidfd = -1
	};
	/* A keeper killed during an upgrade left it set. */
	atomic_store_explicit(&k->seg.h->handover, 0, memory_order_release);
}

static void
set_handover(struct hl_keeper *k, uint64_t v)
{
	/* Pairs with the acquire in lib/client.c worker_serving(). */
	atomic_store_explicit(&k->seg.h->handover, v, memory_order_release);
}

/* The upgrade is over: answer heirloomctl (OK when ERR is 0), record it,
 * and forget its state. The table is served by a worker again, or the
 * supervisor is bringing one back. */
static void
finish(struct hl_keeper *k, int32_t err, const char *text)
{
	struct hl_k_upgrade *u = &k->up;
	struct hl_owner o;
	hl__owner_read(k->seg.h, &o);
	set_handover(k, 0);
	hl_k_seglog(k, HL_LOG_UPGRADE, err, (uint32_t)u->new_pid, o.epoch,
	            err == 0             ? "done"
	            : err == HL_EVERSION ? "refused: layout"
	                                 : "rolled back");
	hl__logl(err == 0 ? HL_LOG_INFO : HL_LOG_ERR, "upgrade %s: %s",
	         err == 0 ? "done" : "failed", text);
	if (err == 0)
		send_type(k, u->ctl, HL_MSG_OK, 0, o.epoch, text);
	else
		send_type(k, u->ctl, HL_MSG_ERR, err, o.epoch, text);
	unhold(k, &u->ctl);
	unhold(k, &u->new_conn);
	unhold(k, &u->old_conn);
	if (u->new_pidfd >= 0) {
		/* Only when the keeper stops (hl_k_up_stop()): it never had
		 * the table and was SIGKILLed; it is never restarted, and its
		 * zombie goes with the keeper. */
		hl_k_unwatch(k, u->new_pidfd);
		close(u->new_pidfd);
	}
	int old_pidfd = u->old_pidfd;
	pid_t old_pid = u->old_pid;
	hl_k_up_init(k);
	/* A parked old worker that was told to retire is reaped when it
	 * exits (hl_k_up_pidfd() with the phase idle). */
	u->old_pidfd = old_pidfd;
	u->old_pid = old_pid;
}

/* Record the first failure; later ones only add to the log. */
static void fail(struct hl_keeper *k, int32_t err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void
fail(struct hl_keeper *k, int32_t err, const char *fmt, ...)
{
	struct hl_k_upgrade *u = &k->up;
	va_list ap;
	char buf[sizeof(u->why)];
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	hl__log("upgrade: %s", buf);
	if (u->err)
		return;
	u->err = err;
	snprintf(u->why, sizeof(u->why), "%s", buf);
}

bool
hl_k_up_on_request(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m)
{
	struct hl_k_upgrade *u = &k->up;
	struct hl_owner o;
	const char *path = hl__msg_text(m);

	/* It makes the keeper execute a path as its own user: never for a
	 * peer that is only a member of --group (docs/security.md). */
	if (c->uid != 0 && c->uid != geteuid()) {
		hl_k_reply_err(c, -EPERM, "only root or uid %u may upgrade the worker",
		               (unsigned)geteuid());
		return false;
	}
	hl__owner_read(k->seg.h, &o);
	if (u->phase != HL_K_UP_IDLE) {
		hl_k_reply_err(c, -EALREADY, "an upgrade to worker pid %d is in progress",
		               (int)u->new_pid);
		return false;
	}
	if (!k->o.spawn) {
		hl_k_reply_err(c, -ENOTSUP,
		               "the keeper does not supervise the worker (start it with "
		               "--spawn-worker): it cannot start the new one");
		return false;
	}
	if (k->stopping || k->damaged || !k->child || k->owner_pid != k->child ||
	    o.role != HL_ROLE_WORKER || o.pid != (uint32_t)k->child ||
	    !atomic_load_explicit(&k->seg.h->worker_ready, memory_order_acquire)) {
		hl_k_reply_err(c, -EAGAIN,
		               "no worker of this keeper serves the table now (owner %s pid %u); "
		               "upgrade when it serves",
		               hl__role_name(o.role), o.pid);
		return false;
	}
	int old = -1;
	for (int i = 0; i < HL_K_MAX_CONNS; i++)
		if (k->conns[i].fd >= 0 && k->conns[i].owner_link && k->conns[i].pid == k->child)
			old = i;
	if (old < 0) {
		hl_k_reply_err(c, -ENOTCONN,
		               "worker pid %d has no link to this keeper yet; retry in a second",
		               (int)k->child);
		return false;
	}
	if (!*path)
		path = k->worker_path;
	if (path[0] != '/' || access(path, X_OK) != 0) {
		hl_k_reply_err(c, -ENOENT, "not an executable absolute path: %.60s", path);
		return false;
	}
	*u = (struct hl_k_upgrade){ .ctl = slot_of(k, c),
		                    .old_conn = old,
		                    .new_conn = -1,
		                    .new_pidfd = -1,
		                    .old_pidfd = u->old_pidfd,
		                    .old_pid = u->old_pid,
		                    .timeout_ms = m->epoch ? m->epoch : 10000,
		                    .started_ns = hl__now_ns() };
	if (u->old_pidfd >= 0) {
		/* The previous upgrade's old worker has not exited yet. */
		hl_k_unwatch(k, u->old_pidfd);
		close(u->old_pidfd);
		u->old_pidfd = -1;
		u->old_pid = 0;
	}
	snprintf(u->new_path, sizeof(u->new_path), "%s", path);
	int rc = hl_k_spawn_path(k, u->new_path, true, &u->new_pid, &u->new_pidfd);
	if (rc) {
		hl_k_reply_err(c, rc, "cannot start %.60s: %s", path, strerror(-rc));
		hl_k_up_init(k);
		return false;
	}
	c->held = true;
	k->conns[old].held = true;
	u->new_started_ns = hl__now_ns();
	u->deadline_ns = u->new_started_ns + u->timeout_ms * 1000000ull;
	u->phase = HL_K_UP_STARTING;
	hl_k_watch(k, u->new_pidfd, HL_K_TAG_UPNEW);
	hl__log("upgrade: started worker pid %d (%s); worker pid %d serves until it takes over",
	        (int)u->new_pid, u->new_path, (int)k->child);
	return true;
}

/* Give the table to the new worker: the old one's threads are joined
 * (HANDOVER), or it exited and the crash path gave the table to us. The
 * new worker becomes the supervisor's child; the old one, if alive, is
 * parked in up.old_*. */
static void
give_to_new(struct hl_keeper *k)
{
	struct hl_k_upgrade *u = &k->up;
	struct hl_shm_header *h = k->seg.h;
	uint64_t start = hl__proc_start_time(u->new_pid);

	/* Crash of the keeper after this write: the new worker is a living
	 * owner, adopted as heir by the next keeper; the old one, parked,
	 * sees its link close and exits. */
	uint64_t epoch = hl__owner_write(h, HL_ROLE_WORKER, (uint32_t)u->new_pid, start);
	atomic_fetch_add_explicit(&h->handoffs, 1, memory_order_relaxed);
	hl_k_seglog(k, HL_LOG_HANDOFF, 0, (uint32_t)u->new_pid, epoch, "upgrade");
	if (k->owner_pidfd >= 0) {
		hl_k_unwatch(k, k->owner_pidfd);
		close(k->owner_pidfd);
	}
	k->owner_pid = u->new_pid;
	k->owner_start = start;
	k->owner_pidfd = -1; /* our child: child_pidfd watches it */
	if (k->child) {
		/* The old worker, parked: reaped by us, never restarted. */
		hl_k_unwatch(k, k->child_pidfd);
		u->old_pid = k->child;
		u->old_pidfd = k->child_pidfd;
		hl_k_watch(k, u->old_pidfd, HL_K_TAG_UPOLD);
	}
	hl_k_unwatch(k, u->new_pidfd);
	k->child = u->new_pid;
	k->child_pidfd = u->new_pidfd;
	k->child_started_ns = u->new_started_ns;
	k->child_handed_back = false;
	hl_k_watch(k, k->child_pidfd, HL_K_TAG_CHILD);
	u->new_pidfd = -1;
	for (int i = 0; i < HL_K_MAX_CONNS; i++)
		k->conns[i].owner_link = false;
	struct hl_kconn *c = conn_at(k, u->new_conn);
	struct hl_msg m;
	hl__msg_init(&m, HL_MSG_OK);
	m.epoch = epoch;
	m.start = k->self_start;
	if (c) {
		c->owner_link = true;
		c->held = false;
		if (hl__msg_send(c->fd, &m, k->segfd))
			hl__log_warn(
			        "upgrade: could not answer worker pid %d; it asks again or exits",
			        (int)u->new_pid);
	}
	u->new_conn = -1;
	u->phase = HL_K_UP_RECOVERING;
	u->deadline_ns = hl__now_ns() + u->timeout_ms * 1000000ull;
	hl__log("upgrade: gave the table to worker pid %d (epoch %lu)", (int)u->new_pid,
	        (unsigned long)epoch);
}

bool
hl_k_up_on_take(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m, bool *keep)
{
	struct hl_k_upgrade *u = &k->up;
	if (u->phase != HL_K_UP_STARTING || c->pid != u->new_pid)
		return false;
	uint32_t have = k->seg.h->version;
	if (m->code != 0 && (uint32_t)m->code != have) {
		/* Before anything is given: the new worker never maps it. */
		fail(k, HL_EVERSION,
		     "new worker has layout version %d, the segment %u (no migration)",
		     (int)m->code, have);
		hl_k_reply_err(c, HL_EVERSION,
		               "segment layout version %u here, %d in this worker: not given "
		               "(no migration in place)",
		               have, (int)m->code);
		*keep = false;
		return true;
	}
	u->new_conn = slot_of(k, c);
	c->held = true;
	*keep = true;
	if (!k->owner_pid) {
		/* The old worker died meanwhile; the table is ours. */
		give_to_new(k);
		return true;
	}
	/* Clients wait through the pause instead of failing (HL_OPEN_NOWAIT):
	 * set before the old worker stops. */
	set_handover(k, 1);
	u->phase = HL_K_UP_YIELDING;
	u->yield_ns = hl__now_ns();
	u->deadline_ns = u->yield_ns + u->timeout_ms * 1000000ull;
	struct hl_owner o;
	hl__owner_read(k->seg.h, &o);
	send_type(k, u->old_conn, HL_MSG_YIELD, 0, o.epoch, NULL);
	hl__log("upgrade: asked worker pid %d to hand the table to worker pid %d (epoch %lu)",
	        (int)k->child, (int)u->new_pid, (unsigned long)o.epoch);
	return true;
}

bool
hl_k_up_on_handover(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m)
{
	struct hl_k_upgrade *u = &k->up;
	struct hl_owner o;
	hl__owner_read(k->seg.h, &o);
	bool owner = o.role == HL_ROLE_WORKER && o.pid == (uint32_t)c->pid &&
	             k->owner_pid == c->pid && o.epoch == m->epoch;
	if (!owner) {
		hl_k_reply_err(c, -ESTALE, "pid %d does not own the table at epoch %lu",
		               (int)c->pid, (unsigned long)m->epoch);
		return false;
	}
	if (u->phase != HL_K_UP_YIELDING || k->child != c->pid) {
		/* Cancelled meanwhile (the new worker failed, or a timeout):
		 * the old worker serves again (it runs its binary anew). */
		hl_k_reply_err(c, -ECANCELED, "the upgrade was cancelled: serve on");
		if (u->phase == HL_K_UP_ROLLBACK)
			u->expect = c->pid;
		return false;
	}
	/* Its threads are joined: nothing of it writes the table. Answer it
	 * first (it parks), then give the table away. */
	struct hl_msg r;
	hl__msg_init(&r, HL_MSG_OK);
	r.epoch = o.epoch + 1;
	r.start = k->self_start;
	hl__msg_send(c->fd, &r, -1);
	hl_k_seglog(k, HL_LOG_HANDBACK, 0, (uint32_t)c->pid, o.epoch, "upgrade");
	give_to_new(k);
	return true;
}

/* The previous binary must serve again: the parked old worker runs its
 * binary anew (same pid: it becomes the child again), or, if it is gone,
 * the supervisor starts the old path at once. */
static void
roll_back(struct hl_keeper *k)
{
	struct hl_k_upgrade *u = &k->up;
	u->phase = HL_K_UP_ROLLBACK;
	u->deadline_ns = 0;
	if (u->old_pid && conn_at(k, u->old_conn) && !hl_k_pidfd_exited(u->old_pidfd)) {
		send_type(k, u->old_conn, HL_MSG_RESUME, 0, 0, u->why);
		hl_k_unwatch(k, u->old_pidfd);
		k->child = u->old_pid;
		k->child_pidfd = u->old_pidfd;
		k->child_started_ns = hl__now_ns();
		k->child_handed_back = false;
		hl_k_watch(k, k->child_pidfd, HL_K_TAG_CHILD);
		u->expect = u->old_pid;
		u->old_pid = 0;
		u->old_pidfd = -1;
		unhold(k, &u->old_conn);
		hl__log("upgrade: worker pid %d runs its binary again", (int)k->child);
		return;
	}
	u->expect = 0;
	if (!k->child && !k->stopping && !k->restart_at_ns)
		hl_k_schedule_restart(k, UINT64_MAX);
}

bool
hl_k_up_child_exited(struct hl_keeper *k, pid_t pid)
{
	struct hl_k_upgrade *u = &k->up;
	switch (u->phase) {
	case HL_K_UP_IDLE: return false;
	case HL_K_UP_STARTING:
	case HL_K_UP_YIELDING:
		/* The old worker died before it handed over: the crash path
		 * took the table; the new worker gets it when it asks (or
		 * now, if it asked already), and recovers as after any crash. */
		hl__log_warn("upgrade: worker pid %d exited before the hand-over; the new worker "
		             "takes the table from the keeper",
		             (int)pid);
		if (u->phase == HL_K_UP_YIELDING && conn_at(k, u->new_conn) && !k->owner_pid)
			give_to_new(k);
		return true;
	case HL_K_UP_RECOVERING:
		fail(k, -ECANCELED, "new worker pid %d exited before it served", (int)pid);
		roll_back(k);
		return true;
	case HL_K_UP_ROLLBACK:
		/* The worker meant to serve again died too: the supervisor's
		 * usual restart, of the old path. */
		u->expect = 0;
		return false;
	}
	return false;
}

/* The new worker exited before it had the table, or the parked old one
 * exited (tag). Reap it. */
void
hl_k_up_pidfd(struct hl_keeper *k, uint64_t tag)
{
	struct hl_k_upgrade *u = &k->up;
	int *pidfd = tag == HL_K_TAG_UPNEW ? &u->new_pidfd : &u->old_pidfd;
	pid_t pid = tag == HL_K_TAG_UPNEW ? u->new_pid : u->old_pid;
	siginfo_t si;
	char how[40];

	if (*pidfd < 0 || !hl_k_pidfd_exited(*pidfd))
		return;
	memset(&si, 0, sizeof(si));
	int32_t code = HL_EXIT_UNKNOWN;
	if (waitid((idtype_t)P_PIDFD, (id_t)*pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid)
		code = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
	hl_k_exit_text(code, how, sizeof(how));
	hl_k_unwatch(k, *pidfd);
	close(*pidfd);
	*pidfd = -1;
	if (tag == HL_K_TAG_UPOLD) {
		hl__log("upgrade: the old worker pid %d %s", (int)pid, how);
		u->old_pid = 0;
		unhold(k, &u->old_conn);
		return;
	}
	hl_k_seglog(k, HL_LOG_WORKER_EXIT, code, (uint32_t)pid, 0, how);
	fail(k, -ECANCELED, "new worker pid %d %s before TAKE", (int)pid, how);
	unhold(k, &u->new_conn);
	if (u->phase == HL_K_UP_STARTING && k->child) {
		/* Nothing was touched: the old worker never stopped serving. */
		char text[sizeof(u->why) + 64];
		snprintf(text, sizeof(text), "%s; pid %d serves on", u->why, (int)k->child);
		finish(k, u->err, text);
		return;
	}
	/* YIELDING: the old worker is stopping; its HANDOVER is refused
	 * (ECANCELED) and it serves again. With the old worker gone too,
	 * the supervisor starts the old path. */
	u->phase = HL_K_UP_ROLLBACK;
	u->expect = k->child;
	u->deadline_ns = 0;
	if (!k->child && !k->stopping && !k->restart_at_ns)
		hl_k_schedule_restart(k, UINT64_MAX);
}

void
hl_k_up_conn_closed(struct hl_keeper *k, int slot)
{
	struct hl_k_upgrade *u = &k->up;
	if (slot == u->ctl) {
		u->ctl = -1;
		if (u->phase != HL_K_UP_IDLE)
			hl__log("upgrade: heirloomctl went away; the upgrade goes on");
	}
	if (slot == u->new_conn)
		u->new_conn = -1; /* it asks again, or exits: the pidfd says */
	if (slot == u->old_conn)
		u->old_conn = -1;
}

uint64_t
hl_k_up_next_ns(const struct hl_keeper *k)
{
	const struct hl_k_upgrade *u = &k->up;
	if (u->phase == HL_K_UP_RECOVERING || u->phase == HL_K_UP_ROLLBACK)
		return hl__now_ns() + POLL_NS;
	if (u->phase != HL_K_UP_IDLE && u->deadline_ns)
		return u->deadline_ns;
	return UINT64_MAX;
}

static bool
serving(struct hl_keeper *k, pid_t pid)
{
	struct hl_owner o;
	if (hl__owner_read(k->seg.h, &o) != 0 || o.role != HL_ROLE_WORKER)
		return false;
	if (pid && o.pid != (uint32_t)pid)
		return false;
	return atomic_load_explicit(&k->seg.h->worker_ready, memory_order_acquire) != 0;
}

void
hl_k_up_tick(struct hl_keeper *k)
{
	struct hl_k_upgrade *u = &k->up;
	uint64_t now = hl__now_ns();
	char text[sizeof(u->why) + 96];

	switch (u->phase) {
	case HL_K_UP_IDLE: return;
	case HL_K_UP_RECOVERING:
		if (serving(k, u->new_pid)) {
			uint64_t ms =
			        (now - (u->yield_ns ? u->yield_ns : u->started_ns)) / 1000000ull;
			if (u->old_pid)
				snprintf(text, sizeof(text),
				         "worker pid %d serves, pid %d retired; %lu ms from YIELD "
				         "to "
				         "ready",
				         (int)u->new_pid, (int)u->old_pid, (unsigned long)ms);
			else
				snprintf(text, sizeof(text),
				         "worker pid %d serves (the old one exited during the "
				         "hand-over); %lu ms",
				         (int)u->new_pid, (unsigned long)ms);
			send_type(k, u->old_conn, HL_MSG_RETIRE, 0, 0, NULL);
			/* Restarts from now on run the new binary. */
			snprintf(k->worker_path, sizeof(k->worker_path), "%s", u->new_path);
			finish(k, 0, text);
			return;
		}
		if (u->deadline_ns && now >= u->deadline_ns) {
			fail(k, -ECANCELED, "new worker pid %d: no recovery within %lu ms",
			     (int)u->new_pid, (unsigned long)u->timeout_ms);
			u->deadline_ns = 0;
			/* Its confirmed exit gives the table back, then
			 * hl_k_up_child_exited() rolls back. */
			hl_k_stop_child(k, SIGKILL);
		}
		return;
	case HL_K_UP_STARTING:
	case HL_K_UP_YIELDING:
		if (!u->deadline_ns || now < u->deadline_ns)
			return;
		fail(k, -ECANCELED, "%s within %lu ms",
		     u->phase == HL_K_UP_STARTING ? "new worker: no TAKE"
		                                  : "old worker: no HANDOVER",
		     (unsigned long)u->timeout_ms);
		u->deadline_ns = 0;
		if (u->new_pidfd >= 0)
			syscall(SYS_pidfd_send_signal, u->new_pidfd, SIGKILL, NULL, 0);
		return;
	case HL_K_UP_ROLLBACK:
		if (serving(k, u->expect)) {
			struct hl_owner o;
			hl__owner_read(k->seg.h, &o);
			snprintf(text, sizeof(text), "%s; pid %u serves", u->why, o.pid);
			finish(k, u->err ? u->err : -ECANCELED, text);
		}
		return;
	}
}

void
hl_k_up_stop(struct hl_keeper *k)
{
	struct hl_k_upgrade *u = &k->up;
	if (u->phase == HL_K_UP_IDLE) {
		if (u->old_pidfd >= 0)
			send_type(k, u->old_conn, HL_MSG_RETIRE, 0, 0, NULL);
		return;
	}
	fail(k, -ESHUTDOWN, "the keeper is stopping");
	if (u->new_pidfd >= 0)
		syscall(SYS_pidfd_send_signal, u->new_pidfd, SIGKILL, NULL, 0);
	/* A parked old worker exits; the new one, if it has the table, is
	 * the child the stop sequence hands back. */
	send_type(k, u->old_conn, HL_MSG_RETIRE, 0, 0, NULL);
	finish(k, u->err, u->why);
}
