/* SPDX-License-Identifier: MIT */
/*
 * handoff.c: how the worker gets the table and gives it back.
 *
 * With a keeper (the normal case) the keeper owns the segment and hands its
 * descriptor over the control socket (daemon/keeper/, protocol in
 * daemon/common/proto.h): TAKE at start, retried until a keeper answers
 * (bounded only by SIGTERM/SIGINT); GIVEBACK at a clean stop, after the
 * shard and monitor threads are joined. Between the two a "link" thread
 * keeps the connection: when the keeper dies the worker serves on, and the
 * thread links up with the next keeper (HELLO) so that GIVEBACK reaches it.
 *
 * Without a keeper (--standalone) the worker creates or opens the segment
 * itself and writes the owner record: the mode of the core issue and of
 * unit-level tests.
 *
 * This file must never write the owner record while a keeper may be
 * writing it: only in standalone mode, or at stop when no keeper answered
 * and the record still names this worker at its epoch.
 */
#include "handoff.h"

#include "heirloom/heirloom.h"
#include "proto.h"
#include "resources.h"
#include "trust.h"
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long to wait for the keeper's answer before treating it as gone. The
 * keeper answers at once; this bounds a keeper that hangs. */
#define REPLY_MS       5000
#define RETRY_MS       250  /* between connects while waiting for a keeper */
#define RELINK_MS      500  /* between connects after losing the keeper */
#define RELINK_SLOW_MS 5000 /* ... after a keeper refused the link */
/* A worker started for an upgrade waits this long for the answer to its
 * TAKE: the keeper answers once the old worker handed the table over
 * (its own timeout, heirloomctl upgrade --timeout, bounds that). */
#define UPGRADE_REPLY_MS 600000

/* The main thread, which the link thread signals (SIGUSR1) on YIELD. */
static pthread_t main_thread;
static int upgrading = -1; /* HEIRLOOM_UPGRADE, read once */

bool
hl_w_upgrading(void)
{
	if (upgrading < 0) {
		const char *e = getenv("HEIRLOOM_UPGRADE");
		upgrading = e && strcmp(e, "1") == 0;
		/* Not for a process this one starts, nor for itself run again
		 * (hl_w_reexec()) after it became an ordinary worker. */
		unsetenv("HEIRLOOM_UPGRADE");
	}
	return upgrading;
}

/* The link to the keeper (w->link, made by hl_w_acquire(); none with
 * --standalone). `fd` belongs to the link thread while it runs and to
 * hl_w_release() after it has been joined: never to both. */
struct hl_w_link {
	char path[HL_SOCK_PATH_MAX];
	int fd;
	int stopfd; /* eventfd: tells the link thread to end */
	pthread_t thread;
	bool running;
};

int
hl_w_acquire_standalone(struct hl_worker *w)
{
	int fd = -1, rc;
	struct hl_layout_params p = w->opt.create;
	if (w->opt.shards)
		p.shards = w->opt.shards;
	rc = hl__layout_defaults(&p);
	if (rc) {
		hl__log_err("invalid capacities: %s", hl_strerror(rc));
		return rc;
	}
	struct hl_shm_header want;
	hl__layout_compute(&p, &want); /* cannot fail: hl__layout_defaults() checked p */
	rc = hl__seg_create(w->opt.name, &p, w->opt.mode ? w->opt.mode : 0660, (gid_t)-1, &fd);
	if (rc == 0) {
		hl__log("created segment /heirloom.%s (%u keys, %u observers, %u endpoints, %u "
		        "shards): %llu bytes reserved",
		        w->opt.name, p.max_keys, p.max_observers, p.max_endpoints, p.shards,
		        (unsigned long long)want.size);
	} else if (rc == -ENOSPC) {
		char msg[768];
		hl__nospace_msg(msg, sizeof(msg), w->opt.name, want.size);
		hl__log_err("cannot create: %s", msg);
		return rc;
	} else if (rc == -EEXIST) {
		/* Not one another user created first (docs/security.md). */
		rc = hl__seg_open_own(w->opt.name, &fd);
		if (rc == -EPERM)
			hl__log_err("/heirloom.%s belongs to another user: refusing it (remove it "
			            "if it is not yours)",
			            w->opt.name);
		if (rc)
			return rc;
	} else {
		return rc;
	}
	rc = hl__seg_map_rw(fd, &w->seg);
	if (rc) {
		close(fd);
		return rc;
	}
	/* A sparse segment (made before reservation): reserve it or stop. */
	rc = hl__seg_reserve(fd, w->seg.size);
	if (rc) {
		char msg[768];
		hl__nospace_msg(msg, sizeof(msg), w->opt.name, w->seg.size);
		hl__log_err("cannot reserve the segment (%s): %s", hl_err_name(rc), msg);
		hl__seg_unmap(&w->seg);
		close(fd);
		return rc;
	}
	struct hl_shm_header *h = w->seg.h;
	/* A torn record (its writer died mid-write) is judged as it is: pid
	 * and start time name a living process only if both were written. */
	struct hl_owner o;
	hl__owner_read(h, &o);
	if (o.role == HL_ROLE_WORKER && o.pid != (uint32_t)getpid() &&
	    hl__proc_alive((int)o.pid, o.start)) {
		hl__log_err("segment is served by worker pid %u already", o.pid);
		hl__seg_unmap(&w->seg);
		close(fd);
		return -EBUSY;
	}
	/* A living keeper writes the owner record: taking the table behind
	 * its back would make two writers of it. */
	uint32_t kpid = atomic_load(&h->keeper_pid);
	if (kpid && hl__proc_alive((int)kpid, atomic_load(&h->keeper_start))) {
		hl__log_err(
		        "segment is kept by keeper pid %u: start the worker without --standalone",
		        kpid);
		hl__seg_unmap(&w->seg);
		close(fd);
		return -EBUSY;
	}
	if (w->opt.shards && w->opt.shards != h->shards)
		hl__log_warn("segment has %u shards; --shards %u applies only when creating",
		             h->shards, w->opt.shards);
	/* No living keeper: we are the record's only writer. A write over an
	 * odd owner_seq would leave it odd, so make it even first. */
	hl__owner_repair(h);
	w->epoch = hl__owner_write(h, HL_ROLE_WORKER, (uint32_t)getpid(),
	                           hl__proc_start_time(getpid()));
	return 0;
}

/* Main thread only, SIGTERM and SIGINT blocked (main.c): wait up to MS for
 * one of them. Returns the signal taken, or 0. */
static int
wait_for_stop(int ms)
{
	sigset_t set;
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	int sig = sigtimedwait(&set, NULL, &ts);
	return sig > 0 ? sig : 0;
}

/* Send REQ and wait for the reply, at most REPLY_MS. With STOP_SIG (main
 * thread, at start) a SIGTERM/SIGINT that arrives meanwhile is taken and
 * stored there, and the wait goes on: the keeper may be giving us the
 * table right now, and then it must be handed back, not abandoned. */
static int
exchange(int fd, const struct hl_msg *req, struct hl_msg *rep, int *passfd, int *stop_sig)
{
	int rc = hl__msg_send(fd, req, -1);
	if (rc)
		return rc;
	int reply_ms = req->type == HL_MSG_TAKE && hl_w_upgrading() ? UPGRADE_REPLY_MS : REPLY_MS;
	for (int waited = 0; waited < reply_ms; waited += RETRY_MS) {
		rc = hl__msg_recv(fd, rep, passfd, RETRY_MS);
		if (rc != -ETIMEDOUT)
			break;
		if (stop_sig && !*stop_sig)
			*stop_sig = wait_for_stop(0);
	}
	if (rc == 0 && rep->type != HL_MSG_OK && rep->type != HL_MSG_ERR) {
		if (passfd && *passfd >= 0)
			close(*passfd);
		rc = -EPROTO;
	}
	return rc;
}

static void
request(struct hl_msg *m, enum hl_msg_type type, const struct hl_worker *w)
{
	hl__msg_init(m, type);
	m->epoch = w->epoch;
	snprintf(m->text, sizeof(m->text), "%s", w->opt.name);
	if (type == HL_MSG_TAKE) {
		/* The keeper refuses the table to a worker of another layout
		 * (HL_EVERSION) before it hands anything over. The variable is
		 * a test hook that plays a build of another layout. */
		const char *v = getenv("HEIRLOOM_TEST_LAYOUT_VERSION");
		m->code = v ? atoi(v) : (int32_t)HL_LAYOUT_VERSION;
	}
}

/* Connect to the keeper at w->link->path and check who listens there with the
 * owner rule of the clients (lib/trust.h) applied to the listener's
 * credentials: another local user's socket planted at the path must never
 * get our requests or hand us a segment of theirs. Returns 0 with the
 * connection in *fd_out, the error of connect(), or HL_EUNTRUSTED (logged
 * with the listener's uid when LOG). */
static int
keeper_connect(struct hl_worker *w, int *fd_out, bool log)
{
	struct hl_w_link *L = w->link;
	struct hl_trust t;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	int fd, rc = hl__sock_connect(L->path, &fd);
	if (rc)
		return rc;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		rc = -errno;
	else if (hl__trust_init(&t, NULL, NULL, 0) != 0 ||
	         hl__trust_owner(&t, cr.uid, cr.gid, 0) != 0)
		rc = HL_EUNTRUSTED;
	if (rc) {
		if (rc == HL_EUNTRUSTED && log)
			hl__log_err(
			        "refusing the keeper at %s: it runs as uid %u gid %u, not root, "
			        "this user, a system user of our groups or $HEIRLOOM_OWNER",
			        L->path, (unsigned)cr.uid, (unsigned)cr.gid);
		close(fd);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

/* ---- the link thread ---- */

static void
relink(struct hl_worker *w, bool *refused)
{
	struct hl_w_link *L = w->link;
	struct hl_msg m, r;
	int fd;

	if (keeper_connect(w, &fd, !*refused))
		return;
	request(&m, HL_MSG_HELLO, w);
	int rc = exchange(fd, &m, &r, NULL, NULL);
	if (rc == 0 && r.type == HL_MSG_OK) {
		L->fd = fd;
		*refused = false;
		hl__log("linked up with keeper pid %u at %s (epoch %lu)", r.pid, L->path,
		        (unsigned long)r.epoch);
		return;
	}
	if (rc == 0 && !*refused) /* say it once, not every few seconds */
		hl__log_warn("keeper at %s refused the link: %s", L->path, hl__msg_text(&r));
	*refused = rc == 0;
	close(fd);
}

static void *
link_main(void *arg)
{
	struct hl_worker *w = arg;
	struct hl_w_link *L = w->link;
	bool refused = false;

	for (;;) {
		struct pollfd p[2] = { { .fd = L->stopfd, .events = POLLIN },
			               { .fd = L->fd, .events = POLLIN } };
		int timeout = L->fd >= 0 ? -1 : refused ? RELINK_SLOW_MS : RELINK_MS;
		int n = poll(p, L->fd >= 0 ? 2 : 1, timeout);
		if (n < 0 && errno != EINTR)
			break; /* cannot happen; release still works without us */
		if (n > 0 && p[0].revents)
			break;
		if (L->fd < 0) {
			relink(w, &refused);
			continue;
		}
		if (n <= 0 || !p[1].revents)
			continue;
		struct hl_msg m;
		int rc = hl__msg_recv(L->fd, &m, NULL, 0);
		if (rc == 0 && m.type == HL_MSG_YIELD && m.epoch == w->epoch) {
			/* An upgrade: the main thread stops the threads and
			 * hands the table over on this connection, so this
			 * thread reads no more of it. */
			hl__log("the keeper asks for the table (upgrade, epoch %lu)",
			        (unsigned long)m.epoch);
			hl_w_upgrade_step("old", 1);
			atomic_store(&w->yield, 1);
			pthread_kill(main_thread, SIGUSR1);
			break;
		}
		if (rc == 0 || rc == -ETIMEDOUT || rc == -EAGAIN)
			continue; /* the keeper sends nothing else unasked; ignore it */
		close(L->fd);
		L->fd = -1;
		hl__log_warn("lost the keeper at %s; serving on, and linking up with the next one",
		             L->path);
	}
	return NULL;
}

static void
link_start(struct hl_worker *w)
{
	struct hl_w_link *L = w->link;
	L->stopfd = eventfd(0, EFD_CLOEXEC);
	if (L->stopfd < 0 || pthread_create(&L->thread, NULL, link_main, w) != 0) {
		hl__log_warn(
		        "cannot start the keeper link thread; a stop will still hand back if the "
		        "keeper lives");
		if (L->stopfd >= 0)
			close(L->stopfd);
		L->stopfd = -1;
		return;
	}
	L->running = true;
}

static void
link_stop(struct hl_worker *w)
{
	struct hl_w_link *L = w->link;
	if (!L->running)
		return;
	uint64_t one = 1;
	ssize_t n = write(L->stopfd, &one, sizeof(one));
	(void)n;
	pthread_join(L->thread, NULL);
	close(L->stopfd);
	L->stopfd = -1;
	L->running = false;
}

/* ---- taking and giving back ---- */

static const char *
socket_override(const struct hl_worker *w)
{
	if (w->opt.socket_path && *w->opt.socket_path)
		return w->opt.socket_path;
	return getenv("HEIRLOOM_SOCKET");
}

/* We were asked to stop while the keeper gave us the table: give it back
 * at once, on the same connection, before anything of ours touched it. */
static void
give_back_unused(struct hl_worker *w, int fd, int sig)
{
	struct hl_msg m, r;
	request(&m, HL_MSG_GIVEBACK, w);
	int rc = exchange(fd, &m, &r, NULL, NULL);
	hl__log("stopped by SIG%s while taking the table: %s", sigabbrev_np(sig),
	        rc == 0 && r.type == HL_MSG_OK ? "handed it back unused"
	                                       : "the keeper takes it back when we exit");
}

/* One TAKE on the fresh connection FD. 0 with the segment's descriptor in
 * *segfd on success; 1 to try again later; -EINTR when stopped; else the
 * error to give up with. */
static int
take_once(struct hl_worker *w, int fd, int *segfd)
{
	struct hl_w_link *L = w->link;
	struct hl_msg m, r;
	int sig = 0;
	hl_w_upgrade_step("new", 1);
	request(&m, HL_MSG_TAKE, w);
	int rc = exchange(fd, &m, &r, segfd, &sig);
	if (sig) {
		if (rc == 0 && r.type == HL_MSG_OK) {
			w->epoch = r.epoch;
			give_back_unused(w, fd, sig);
		} else {
			hl__log("stopped by SIG%s while waiting for the keeper", sigabbrev_np(sig));
		}
		if (*segfd >= 0)
			close(*segfd);
		*segfd = -1;
		return -EINTR;
	}
	if (rc) {
		hl__log_warn("no answer from the keeper at %s (%s); trying again", L->path,
		             hl_strerror(rc));
		return 1;
	}
	if (r.type == HL_MSG_OK && *segfd >= 0) {
		w->epoch = r.epoch;
		hl__log("got the table from keeper pid %u (epoch %lu)", r.pid,
		        (unsigned long)r.epoch);
		return 0;
	}
	if (*segfd >= 0)
		close(*segfd);
	*segfd = -1;
	if (r.type == HL_MSG_OK) {
		hl__log_warn("the keeper at %s answered without a descriptor; trying again",
		             L->path);
		return 1;
	}
	hl__log_warn("the keeper refused to give the table: %s", hl__msg_text(&r));
	if (r.code == -EMFILE || r.code == -ESHUTDOWN)
		return 1; /* busy or stopping: another keeper may come */
	return r.code < 0 ? r.code : -EPROTO;
}

/* The descriptor a trusted keeper passed must still be a segment whose
 * owner we trust: the same rule as a client's. 0 or HL_EUNTRUSTED (logged). */
static int
trusted_segment(int segfd)
{
	struct hl_trust t;
	struct stat st;
	int rc = hl__trust_init(&t, NULL, NULL, 0);
	if (rc == 0)
		rc = hl__trust_fd(&t, segfd, &st);
	if (rc == HL_EUNTRUSTED) {
		char why[512];
		hl__trust_explain(&t, &st, why, sizeof(why));
		hl__log_err("refusing the segment the keeper gave: %s", why);
	}
	return rc;
}

int
hl_w_acquire(struct hl_worker *w)
{
	int rc, last = 0;

	main_thread = pthread_self();
	(void)hl_w_upgrading();
	if (w->opt.standalone)
		return hl_w_acquire_standalone(w);
	struct hl_w_link *L = calloc(1, sizeof(*L));
	if (!L)
		return -ENOMEM;
	L->fd = -1;
	L->stopfd = -1;
	w->link = L;
	rc = hl__sock_path(w->opt.name, socket_override(w), L->path, sizeof(L->path), NULL);
	if (rc) {
		hl__log_err("control socket path for '%s': %s (use --socket)", w->opt.name,
		            hl_strerror(rc));
		return rc;
	}
	for (;;) {
		int fd, segfd = -1;
		rc = keeper_connect(w, &fd, true);
		if (rc == HL_EUNTRUSTED)
			return rc;
		if (rc == 0) {
			rc = take_once(w, fd, &segfd);
			if (rc == 0) {
				hl_w_upgrade_step("new", 2);
				rc = trusted_segment(segfd);
				if (rc == 0)
					rc = hl__seg_map_rw(segfd, &w->seg);
				if (rc) {
					/* We own it on paper: exiting lets the keeper
					 * take it back (our pidfd). */
					hl__log_err(
					        "the keeper's segment does not validate: %s (%s)",
					        hl_strerror(rc), hl_err_name(rc));
					close(segfd);
					close(fd);
					return rc;
				}
				L->fd = fd;
				link_start(w);
				return 0;
			}
			close(fd);
			if (rc < 0)
				return rc;
			rc = -EAGAIN;
		}
		if (rc != last) {
			/* Once per kind of failure, not once per attempt. */
			hl__log("waiting for keeper at %s (%s)", L->path, hl_strerror(rc));
			last = rc;
		}
		int sig = wait_for_stop(RETRY_MS);
		if (sig) {
			hl__log("stopped by SIG%s while waiting for the keeper", sigabbrev_np(sig));
			return -EINTR;
		}
	}
}

void
hl_w_release(struct hl_worker *w, int clean)
{
	struct hl_shm_header *h = w->seg.h;
	struct hl_owner o;
	struct hl_msg m, r;
	int fd, rc = -ENOTCONN;

	if (w->opt.standalone) {
		hl__owner_write(h, HL_ROLE_NONE, 0, 0);
		return;
	}
	struct hl_w_link *L = w->link;
	link_stop(w);
	fd = L->fd;
	L->fd = -1;
	if (!clean) {
		/* Not giving back: the keeper sees our exit through its pidfd. */
		if (fd >= 0)
			close(fd);
		return;
	}
	if (fd < 0 && keeper_connect(w, &fd, true) < 0)
		fd = -1;
	if (fd >= 0) {
		request(&m, HL_MSG_GIVEBACK, w);
		rc = exchange(fd, &m, &r, NULL, NULL);
		close(fd);
		if (rc == 0 && r.type == HL_MSG_OK) {
			hl__log("handed the table back to keeper pid %u (epoch %lu -> %lu)", r.pid,
			        (unsigned long)w->epoch, (unsigned long)r.epoch);
			return;
		}
		if (rc == 0) {
			/* The keeper says we do not own it: then not ours to
			 * write either. */
			hl__log_warn("the keeper refused the hand-back: %s", hl__msg_text(&r));
			return;
		}
	}
	/* No keeper answered. If the record still names us at our epoch, no
	 * keeper took the table (a keeper only takes it from a worker that has
	 * exited, or on our GIVEBACK), so we are its only writer: say that
	 * nobody owns it. The next keeper takes it from there. (A keeper that
	 * hung for REPLY_MS and then handles our GIVEBACK could write at the
	 * same time; the record would then be torn, which that keeper's
	 * successor repairs at start.) */
	hl__owner_read(h, &o);
	if (o.role == HL_ROLE_WORKER && o.pid == (uint32_t)getpid() && o.epoch == w->epoch) {
		uint64_t epoch = hl__owner_write(h, HL_ROLE_NONE, 0, 0);
		hl__log_warn(
		        "no keeper answered at %s (%s): left the table with no owner (epoch %lu); "
		        "a keeper takes it when it starts",
		        L->path, hl_strerror(rc), (unsigned long)epoch);
	}
}

/* The owner record still names this worker at the epoch it holds: nobody
 * took the table (a keeper takes it only on a confirmed exit, a GIVEBACK
 * or a HANDOVER). */
static bool
still_ours(struct hl_worker *w)
{
	struct hl_owner o;
	hl__owner_read(w->seg.h, &o);
	return o.role == HL_ROLE_WORKER && o.pid == (uint32_t)getpid() && o.epoch == w->epoch;
}

enum hl_w_after
hl_w_handover(struct hl_worker *w)
{
	struct hl_w_link *L = w->link;
	struct hl_msg m, r;

	link_stop(w);
	int fd = L->fd;
	L->fd = -1;
	hl_w_upgrade_step("old", 2);
	if (fd < 0) {
		/* The keeper went away after asking: serve again. */
		hl__log_warn("upgrade: lost the keeper before the hand-over; serving again");
		return HL_W_AFTER_REEXEC;
	}
	request(&m, HL_MSG_HANDOVER, w);
	int rc = hl__msg_send(fd, &m, -1);
	hl_w_upgrade_step("old", 3);
	if (rc == 0)
		rc = hl__msg_recv(fd, &r, NULL, REPLY_MS);
	if (rc == 0 && r.type == HL_MSG_ERR) {
		close(fd);
		hl__log_err("upgrade: the keeper did not take the hand-over: %s", hl__msg_text(&r));
		return still_ours(w) ? HL_W_AFTER_REEXEC : HL_W_AFTER_EXIT;
	}
	if (rc != 0 || r.type != HL_MSG_OK) {
		close(fd);
		hl__log_err("upgrade: no answer to the hand-over (%s)",
		            hl_strerror(rc ? rc : -EPROTO));
		return still_ours(w) ? HL_W_AFTER_REEXEC : HL_W_AFTER_EXIT;
	}
	hl__log("upgrade: handed the table over (epoch %lu -> %lu); waiting for the new worker",
	        (unsigned long)w->epoch, (unsigned long)r.epoch);
	hl_w_upgrade_step("old", 4);
	/* Parked: nothing of ours touches the table. The keeper says how it
	 * ended; a keeper that dies meanwhile ends it too (the new worker
	 * keeps the table, a restarted keeper supervises). */
	for (;;) {
		rc = hl__msg_recv(fd, &r, NULL, -1);
		if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR)
			continue;
		break;
	}
	close(fd);
	if (rc == 0 && r.type == HL_MSG_RESUME) {
		hl__log("upgrade: rolled back (%s); running this binary again", hl__msg_text(&r));
		return HL_W_AFTER_REEXEC;
	}
	hl_w_upgrade_step("old", 5);
	if (rc == 0 && r.type == HL_MSG_RETIRE)
		hl__log("upgrade: the new worker serves; exiting");
	else
		hl__log_err("upgrade: lost the keeper while parked (%s); exiting",
		            hl_strerror(rc ? rc : -EPROTO));
	return HL_W_AFTER_EXIT;
}

void
hl_w_reexec(char **argv)
{
	/* Nothing of this process outlives the exec but its pid and start
	 * time: its threads are joined, its descriptors close-on-exec. The
	 * keeper knows it by both, so its TAKE is answered as a repeat
	 * (still the owner) or given anew (the table came back). */
	execv("/proc/self/exe", argv);
	hl__log_err("cannot run this binary again (/proc/self/exe): %s", strerror(errno));
}
