/* SPDX-License-Identifier: MIT */
/*
 * main.c: heirloom-keeper: options, the segment (create it, or reopen and
 * validate it, then lock and map it for life), the control socket, the one
 * event loop, signals and the stop sequence.
 *
 * The keeper must never map a segment it has not validated, never die from
 * what a peer sends, and never block in the loop: a peer is answered or
 * dropped, a child is reaped through its pidfd.
 */
#include "keeper.h"

#include "config.h"
#include "notify.h"
#include "heirloom/heirloom.h"
#include "resources.h"
#include "util.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define STR_(x)      #x
#define STR(x)       STR_(x)
#define VERSION_TEXT STR(HL_VERSION_MAJOR) "." STR(HL_VERSION_MINOR) "." STR(HL_VERSION_PATCH)

/* Exit statuses (listed in --help). */
enum {
	EXIT_USAGE = 1,
	EXIT_SEGMENT = 2,
	EXIT_TAKEN = 3,
	EXIT_NOSPACE = HL_EXIT_NOSPACE,
	EXIT_DAMAGED = HL_EXIT_DAMAGED,
	EXIT_STATE = HL_EXIT_STATE
};

static struct hl_keeper K;

void
hl_k_watch(struct hl_keeper *k, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };
	if (epoll_ctl(k->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		hl__log_err("epoll_ctl(add %d): %s", fd, strerror(errno));
}

void
hl_k_unwatch(struct hl_keeper *k, int fd)
{
	epoll_ctl(k->epfd, EPOLL_CTL_DEL, fd, NULL);
}

/* ---- options ---- */

static const char summary[] =
        "Own a heirloom segment and hand it to one worker at a time over a control\n"
        "socket; take it back when the worker exits (the heir). With --spawn-worker,\n"
        "also start the worker and restart it after any exit but a clean hand-back:\n"
        "at once when it ran at least --restart-stable; after a quicker exit, wait\n"
        "--restart-min, doubling on each further quick exit in a row up to\n"
        "--restart-max (crash-loop protection; a stable run starts over).\n"
        "\n"
        "The control socket is --socket, else $RUNTIME_DIRECTORY/heirloom-NAME.sock,\n"
        "else /run/heirloom/ as root, else $XDG_RUNTIME_DIR, else /tmp/heirloom-$UID/.\n"
        "Capacity options apply only when the segment is created. Every byte of\n"
        "the segment is reserved in /dev/shm when it is created, so it must fit:\n"
        "the defaults make about 24 MiB with 2 shards, 30 MiB with 4 (a Docker\n"
        "container's /dev/shm is 64 MiB). Size = ~20 KiB header + keys x 328 B +\n"
        "observers x 64 B + heap (default keys x 512 B) + endpoints x (8 KiB +\n"
        "shards x (req-ring + ev-ring)); 'heirloomctl size [OPTIONS]' prints it.\n"
        "\n"
        "Exit status: 0 stopped cleanly; 1 bad usage or configuration; 2 the segment\n"
        "cannot be created, opened or validated; 3 another keeper holds the segment\n"
        "or the control socket cannot be set up; 5 /dev/shm has not enough free\n"
        "space for the segment (the message says how much is needed and free);\n"
        "6 the segment was truncated or replaced while served (logged once; no\n"
        "worker is restarted against it); 7 the state directory (--durability) is\n"
        "unusable or its files do not check (nothing was loaded).";

/* One option: name, type, default, help, placeholder, bounds, variable. */
#define KOPT(n_, t_, d_, h_, mv_, lo_, hi_, dst_)                                                  \
	(struct hl_cfg_opt)                                                                        \
	{                                                                                          \
		.name = (n_), .type = (t_), .def = (d_), .help = (h_), .metavar = (mv_),           \
		.min = (lo_), .max = (hi_), .dst = (dst_)                                          \
	}

#define HL_K_MAX_OPTS 40

/* The options, writing into P (the keeper's, or a scratch copy when
 * SIGHUP reloads). */
static void
options(struct hl_kopts *p, struct hl_cfg_opt *o, size_t *n)
{
	size_t i = 0;
	o[i++] = (struct hl_cfg_opt){
		.name = "spawn-worker",
		.type = HL_CFG_STR,
		.implicit = "heirloom-worker",
		.metavar = "PATH",
		.help = "Start the worker and restart it (a bare name is looked up next to "
		        "this binary, then in $PATH).",
		.dst = &p->spawn
	};
	o[i++] = KOPT("worker-args", HL_CFG_STR, NULL,
	              "Extra arguments for the spawned worker, split at spaces.", "ARGS", 0, 0,
	              &p->worker_args);
	o[i++] = KOPT("socket", HL_CFG_STR, NULL,
	              "Control socket path (default: see below; the worker must use the same).",
	              "PATH", 0, 0, &p->socket);
	o[i++] = KOPT("mode", HL_CFG_MODE, "0660", "File mode of a new segment and of the socket.",
	              NULL, 0, 0, &p->mode);
	o[i++] = KOPT("group", HL_CFG_STR, NULL,
	              "Group of the segment and socket; its members may use the socket.", "GROUP",
	              0, 0, &p->group);
	o[i++] = KOPT("foreground", HL_CFG_BOOL, "false",
	              "Stay in the foreground (for systemd, a terminal or a test).", NULL, 0, 0,
	              &p->foreground);
	o[i++] =
	        KOPT("stop-timeout", HL_CFG_MS, "30s",
	             "On stop, wait this long for the spawned worker's hand-back, then SIGKILL it.",
	             NULL, 0, 3600000, &p->stop_timeout_ms);
	o[i++] = KOPT("restart-stable", HL_CFG_MS, "1s",
	              "Supervisor: a worker that ran this long is restarted at once when it "
	              "exits; a quicker exit is a crash loop and backs off (0 = never back off).",
	              NULL, 0, 3600000, &p->restart_stable_ms);
	o[i++] = KOPT("restart-min", HL_CFG_MS, "100ms",
	              "Supervisor: delay before restarting a worker after its first quick exit.",
	              NULL, 0, 3600000, &p->restart_min_ms);
	o[i++] = KOPT("restart-max", HL_CFG_MS, "5s",
	              "Supervisor: the delay doubles after each further quick exit up to this.",
	              NULL, 0, 3600000, &p->restart_max_ms);
	o[i++] = KOPT("hang-timeout", HL_CFG_MS, "5s",
	              "Kill the worker (SIGKILL; then it is restarted like after a crash) when "
	              "one of its threads makes no progress this long (0 = never).",
	              NULL, 0, 3600000, &p->hang_timeout_ms);
	o[i++] = KOPT("shards", HL_CFG_INT, "0",
	              "Shards of a new segment (0 = number of CPUs, at most " STR(
	                      HL_DEF_SHARDS_MAX) "); each adds rings to every endpoint.",
	              NULL, 0, HL_SHARDS_MAX, &p->shards);
	o[i++] = KOPT("max-keys", HL_CFG_INT, STR(HL_DEF_KEYS),
	              "Key capacity of a new segment (328 B each, plus heap).", NULL, 1, 1 << 24,
	              &p->max_keys);
	o[i++] = KOPT("max-observers", HL_CFG_INT, STR(HL_DEF_OBSERVERS),
	              "Observer capacity of a new segment (64 B each).", NULL, 1, 1 << 24,
	              &p->max_observers);
	o[i++] = KOPT("max-endpoints", HL_CFG_INT, STR(HL_DEF_ENDPOINTS),
	              "Client endpoint capacity of a new segment: processes attached at once "
	              "(8 KiB + shards x (req-ring + ev-ring) each).",
	              NULL, 1, 65536, &p->max_endpoints);
	o[i++] = KOPT("max-value", HL_CFG_SIZE, "4096", "Largest value in a new segment.", NULL, 0,
	              HL_VALUE_MAX_LIMIT, &p->max_value);
	o[i++] =
	        KOPT("heap", HL_CFG_SIZE, "0",
	             "Value heap of a new segment (0 = max-keys x " STR(HL_DEF_HEAP_PER_KEY) " B).",
	             NULL, 0, 1ll << 40, &p->heap);
	o[i++] = KOPT("req-ring", HL_CFG_SIZE, "0",
	              "Request ring per endpoint and shard, a power of two (0 = 16 KiB or what "
	              "max-value needs).",
	              NULL, 0, 1 << 30, &p->req_ring);
	o[i++] = KOPT("ev-ring", HL_CFG_SIZE, "0",
	              "Event ring per endpoint and shard, a power of two (0 = 32 KiB or what "
	              "max-value needs).",
	              NULL, 0, 1 << 30, &p->ev_ring);
	o[i++] = KOPT("print-config", HL_CFG_BOOL, "false",
	              "Print every option's value and where it came from, then exit 0.", NULL, 0, 0,
	              &p->print_config);
	i += hl__log_cfg_opts(&o[i], &p->log_level, &p->log_format);
	static const char *const dur_modes[] = { "none", "snapshot", "log", NULL };
	o[i++] = (struct hl_cfg_opt){
		.name = "durability",
		.type = HL_CFG_STR,
		.def = "none",
		.help = "Keep the table on disk: none, snapshot (periodic, at stop, on demand) or "
		        "log (every change, SYNC publishes wait for the disk).",
		.metavar = "MODE",
		.choices = dur_modes,
		.dst = &p->durability,
	};
	o[i++] = KOPT("state-dir", HL_CFG_STR, NULL,
	              "Directory of the snapshot and log (default /var/lib/heirloom/NAME).", "DIR",
	              0, 0, &p->state_dir);
	o[i++] = KOPT("snapshot-interval", HL_CFG_MS, "5m",
	              "Write a snapshot this often (0 = only on demand and at stop).", NULL, 0,
	              INT64_MAX, &p->snapshot_interval_ms);
	o[i++] = KOPT("compact-size", HL_CFG_SIZE, "64M",
	              "Log mode: compact the log into a snapshot past this many bytes.", NULL, 4096,
	              INT64_MAX, &p->compact_size);
	o[i++] = KOPT("history", HL_CFG_SIZE, "0",
	              "History ring per shard of a new segment, a power of two (0 = 1 MiB or "
	              "what max-value needs): how far back observers can resume and catch up.",
	              NULL, 0, 1 << 30, &p->history);
	if (i > HL_K_MAX_OPTS)
		hl__die("keeper option table overflow");
	*n = i;
}

static int
resolve_group(struct hl_keeper *k)
{
	k->gid = (gid_t)-1;
	if (!k->o.group || !*k->o.group)
		return 0;
	struct group *g = getgrnam(k->o.group);
	if (g) {
		k->gid = g->gr_gid;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long v = strtoul(k->o.group, &end, 10);
	if (!errno && end != k->o.group && !*end && v < (gid_t)-1) {
		k->gid = (gid_t)v;
		return 0;
	}
	fprintf(stderr, "heirloom-keeper: --group: no group '%s'\n", k->o.group);
	return -EINVAL;
}

/* ---- readiness: the detaching parent (systemd's socket: notify.c) ---- */

/* Detach: the parent exits 0 once the child says it is ready (socket
 * listening), or with the child's status if it fails first; so a script
 * that starts the keeper can connect as soon as the command returns. */
static int
detach(int *ready_fd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		char b;
		int st = 0;
		close(p[1]);
		ssize_t n;
		do
			n = read(p[0], &b, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(0);
		waitpid(pid, &st, 0);
		_exit(WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_USAGE);
	}
	close(p[0]);
	setsid();
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
		close(devnull);
	}
	*ready_fd = p[1];
	return 0;
}

/* ---- the segment ---- */

static bool
given(const struct hl_cfg *cfg, const char *opt)
{
	enum hl_cfg_source s = hl__cfg_source(cfg, opt, NULL);
	return s == HL_CFG_SRC_FLAG || s == HL_CFG_SRC_ENV || s == HL_CFG_SRC_FILE;
}

/* Undo our creation of the segment when the start fails after it: a new
 * segment nobody serves would only be in the way (and look served). We
 * hold its lock, so no other keeper uses it; a client that opened it in
 * the meantime keeps its mapping of an unlinked object. */
static void
drop_created(struct hl_keeper *k)
{
	int rc = hl__seg_unlink(k->name);
	if (rc)
		hl__log_warn("cannot remove the segment /heirloom.%s it created: %s", k->name,
		             hl_strerror(rc));
	else
		hl__log("removed the segment /heirloom.%s it created", k->name);
	k->seg_created = false;
}

static int
open_segment(struct hl_keeper *k, const struct hl_cfg *cfg)
{
	struct hl_layout_params p = {
		.max_keys = (uint32_t)k->o.max_keys,
		.max_observers = (uint32_t)k->o.max_observers,
		.max_endpoints = (uint32_t)k->o.max_endpoints,
		.max_value = (uint32_t)k->o.max_value,
		.shards = (uint32_t)k->o.shards,
		.req_ring_bytes = (uint32_t)k->o.req_ring,
		.ev_ring_bytes = (uint32_t)k->o.ev_ring,
		.hist_bytes = (uint32_t)k->o.history,
		.heap_bytes = (uint64_t)k->o.heap,
	};
	bool created = false;
	int rc = hl__layout_defaults(&p);
	if (rc) {
		hl__log_err("invalid capacities (ring sizes must be powers of two large enough for "
		            "two records of max-value; the heap must hold one value): %s",
		            hl_strerror(rc));
		return EXIT_USAGE;
	}
	struct hl_shm_header want;
	hl__layout_compute(&p, &want); /* cannot fail: hl__layout_defaults() checked p */
	rc = hl__seg_create(k->name, &p, (mode_t)k->o.mode, k->gid, &k->segfd);
	if (rc == 0) {
		created = true;
		struct hl_layout_sizes z;
		hl__layout_sizes(&want, &z);
		hl__log("created segment /heirloom.%s (%u keys, %u observers, %u endpoints, "
		        "%u shards, mode %04o): %llu bytes reserved (keys %llu, observers %llu, "
		        "heap %llu, endpoints %llu)",
		        k->name, p.max_keys, p.max_observers, p.max_endpoints, p.shards, k->o.mode,
		        (unsigned long long)z.total, (unsigned long long)z.keys,
		        (unsigned long long)z.observers, (unsigned long long)z.heap,
		        (unsigned long long)z.endpoints);
	} else if (rc == -ENOSPC) {
		char msg[768];
		hl__nospace_msg(msg, sizeof(msg), k->name, want.size);
		hl__log_err("cannot create: %s", msg);
		return EXIT_NOSPACE;
	} else if (rc == -EEXIST) {
		/* Only an object of ours (or root's): another local user could
		 * have created the name first to read or rewrite every value. */
		rc = hl__seg_open_own(k->name, &k->segfd);
		if (rc == -EPERM)
			hl__log_err(
			        "segment /heirloom.%s belongs to another user: refusing it; "
			        "remove it (heirloomctl --name %s segment remove --force) if it "
			        "is not yours to serve",
			        k->name, k->name);
	}
	if (rc) {
		hl__log_err("cannot %s segment /heirloom.%s: %s (%s)", created ? "create" : "open",
		            k->name, hl_strerror(rc), hl_err_name(rc));
		return EXIT_SEGMENT;
	}

	/* One keeper per segment: a lock on our own open of the object (a
	 * separate open file description from segfd, which workers share: a
	 * worker outliving us must not keep our lock). The kernel drops it
	 * when we die, whatever the way. */
	rc = hl__seg_open_fd(k->name, 0, &k->lockfd);
	if (rc == 0 && flock(k->lockfd, LOCK_EX | LOCK_NB) < 0)
		rc = -errno;
	if (rc) {
		struct hl_shm_header copy;
		uint32_t other = 0;
		if (pread(k->segfd, &copy, sizeof(copy), 0) == (ssize_t)sizeof(copy))
			other = atomic_load_explicit(&copy.keeper_pid, memory_order_relaxed);
		if (rc == -EWOULDBLOCK)
			hl__log_err(
			        "another keeper (pid %u) holds segment /heirloom.%s; stop it first",
			        other, k->name);
		else
			hl__log_err("cannot lock segment /heirloom.%s: %s", k->name,
			            hl_strerror(rc));
		return EXIT_TAKEN;
	}

	k->seg_created = created;
	rc = hl__seg_map_rw(k->segfd, &k->seg);
	if (rc) {
		if (created)
			drop_created(k);
		/* Never map what did not validate: say what is wrong and what
		 * to do, and leave the object as it is for inspection. */
		hl__log_err(
		        "segment /heirloom.%s is not usable: %s (%s). It was made by another "
		        "heirloom version or is damaged, so the keeper will not map it. Inspect it "
		        "(/dev/shm/heirloom.%s); to start over, remove it with "
		        "'rm /dev/shm/heirloom.%s' (its contents are lost) and start the keeper "
		        "again.",
		        k->name, hl_strerror(rc), hl_err_name(rc), k->name, k->name);
		return EXIT_SEGMENT;
	}
	/* The loop looks for a truncated object before it reads the
	 * mapping, and the writer thread every 100 ms; a read that still
	 * comes after the truncation (a window those checks narrow but cannot
	 * close) ends the keeper with the same exit 6, never a crash. */
	char bus[256];
	size_t bus_len = hl__log_line(bus, sizeof(bus), HL_LOG_ERR,
	                              "SIGBUS on segment /heirloom.%s: it was truncated while "
	                              "served; stopping (exit 6), it cannot be served again",
	                              k->name);
	hl__seg_sigbus_exit(k->seg.base, k->seg.size, bus, bus_len);
	/* A segment made before every page was reserved at creation: reserve
	 * its holes now, or stop before anyone faults on them. */
	if (!created && (rc = hl__seg_reserve(k->segfd, k->seg.size)) != 0) {
		char msg[768];
		hl__nospace_msg(msg, sizeof(msg), k->name, k->seg.size);
		hl__log_err("cannot reserve the existing segment (%s): %s", hl_err_name(rc), msg);
		return rc == -ENOSPC ? EXIT_NOSPACE : EXIT_SEGMENT;
	}
	if (!created) {
		const struct hl_shm_header *h = k->seg.h;
		if (given(cfg, "shards") || given(cfg, "max-keys") || given(cfg, "max-observers") ||
		    given(cfg, "max-endpoints") || given(cfg, "max-value") || given(cfg, "heap") ||
		    given(cfg, "req-ring") || given(cfg, "ev-ring") || given(cfg, "history"))
			hl__log_warn("segment exists, capacity options ignored (it has %u keys, %u "
			             "observers, %u endpoints, %u shards)",
			             h->max_keys, h->max_observers, h->max_endpoints, h->shards);
		hl__log("reopened segment /heirloom.%s (validated)", k->name);
	}
	return 0;
}

/* ---- the control socket ---- */

/* The socket's directory, before anything is created: one heirloom makes
 * (dir_is_ours) is created if missing; any other (--socket,
 * $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR) must exist. Either must be ours or
 * root's and closed to other users' writes, or another local user could
 * replace our socket with theirs and be handed workers. */
static int
socket_dir(struct hl_keeper *k)
{
	int ours = 0, rc;

	rc = hl__sock_path(k->name, k->o.socket, k->sock_path, sizeof(k->sock_path), &ours);
	if (rc) {
		hl__log_err("control socket path for '%s': %s", k->name, hl_strerror(rc));
		return EXIT_TAKEN;
	}
	rc = ours ? hl__sock_dir_prepare(k->sock_path, k->gid) : hl__sock_dir_check(k->sock_path);
	if (rc) {
		hl__log_err(
		        "cannot use the directory of %s: %s (it must be a directory owned by this "
		        "user or root and not writable by others)",
		        k->sock_path, hl_strerror(rc));
		return EXIT_TAKEN;
	}
	return 0;
}

static int
listen_socket(struct hl_keeper *k)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;

	memcpy(sa.sun_path, k->sock_path, strlen(k->sock_path) + 1);
	k->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (k->lfd < 0) {
		hl__log_err("socket: %s", strerror(errno));
		return EXIT_TAKEN;
	}
	for (int attempt = 0;; attempt++) {
		/* Created 0600 by bind (umask), widened by chmod below: no
		 * moment where the socket is more open than configured. */
		mode_t old = umask(0177);
		int rc = bind(k->lfd, (struct sockaddr *)&sa, sizeof(sa));
		umask(old);
		if (rc == 0)
			break;
		if (errno != EADDRINUSE || attempt > 0) {
			hl__log_err("cannot bind %s: %s", k->sock_path, strerror(errno));
			return EXIT_TAKEN;
		}
		/* Something is there. A live keeper of another segment
		 * configured with the same path answers a connect; a file left
		 * by a dead keeper refuses it and is replaced. Anything that is
		 * not a socket is not ours to remove. */
		int probe;
		if (lstat(k->sock_path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			hl__log_err("%s exists and is not a socket: remove it or choose --socket",
			            k->sock_path);
			return EXIT_TAKEN;
		}
		if (hl__sock_connect(k->sock_path, &probe) == 0) {
			close(probe);
			hl__log_err("another keeper listens on %s; stop it or choose --socket",
			            k->sock_path);
			return EXIT_TAKEN;
		}
		unlink(k->sock_path);
	}
	if (chmod(k->sock_path, (mode_t)k->o.mode & 0777) < 0 ||
	    (k->gid != (gid_t)-1 && chown(k->sock_path, (uid_t)-1, k->gid) < 0))
		hl__log_warn("cannot set mode/group of %s: %s", k->sock_path, strerror(errno));
	if (stat(k->sock_path, &st) == 0) {
		k->sock_dev = st.st_dev;
		k->sock_ino = st.st_ino;
	}
	if (listen(k->lfd, 16) < 0) {
		hl__log_err("listen %s: %s", k->sock_path, strerror(errno));
		return EXIT_TAKEN;
	}
	hl__log("listening on %s", k->sock_path);
	return 0;
}

static bool
peer_allowed(const struct hl_keeper *k, int fd, const struct ucred *cr)
{
	if (cr->uid == 0 || cr->uid == geteuid())
		return true;
	if (k->gid == (gid_t)-1)
		return false;
	if (cr->gid == k->gid)
		return true;
	/* Supplementary groups of the peer at connect time (Linux >= 4.13). */
	gid_t groups[256];
	socklen_t len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == k->gid)
			return true;
	return false;
}

/* Read and discard what the peer already sent (descriptors included):
 * closing with unread data makes the peer's next read fail with a reset
 * instead of showing it our last reply. Bounded: never a loop a peer
 * controls. */
static void
drain_and_close(int fd)
{
	struct hl_msg m;
	for (int i = 0; i < 8; i++) {
		int rc = hl__msg_recv(fd, &m, NULL, 0);
		if (rc != 0 && rc != -EPROTO)
			break;
	}
	close(fd);
}

static void
drop_conn(struct hl_keeper *k, struct hl_kconn *c)
{
	if (c->fd < 0)
		return;
	hl_k_unwatch(k, c->fd);
	drain_and_close(c->fd);
	c->fd = -1;
	c->owner_link = false;
	c->held = false;
	hl_k_up_conn_closed(k, (int)(c - k->conns));
	hl_k_dur_conn_closed(k, (int)(c - k->conns));
}

static void
accept_all(struct hl_keeper *k)
{
	for (;;) {
		int fd = accept4(k->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				hl__log_err("accept: %s", strerror(errno));
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		struct ucred cr;
		socklen_t len = sizeof(cr);
		struct hl_kconn tmp = { .fd = fd };
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
			close(fd);
			continue;
		}
		hl__log_debug("connection from pid %d uid %u", (int)cr.pid, (unsigned)cr.uid);
		if (!peer_allowed(k, fd, &cr)) {
			hl__log_warn(
			        "refused a connection from pid %d uid %u: not this user, root or "
			        "group %s",
			        (int)cr.pid, (unsigned)cr.uid,
			        k->o.group ? k->o.group : "(none set)");
			hl_k_reply_err(&tmp, -EACCES,
			               "uid %u may not use this keeper (run as uid %u, root, or a "
			               "member of its --group)",
			               (unsigned)cr.uid, (unsigned)geteuid());
			drain_and_close(fd);
			continue;
		}
		struct hl_kconn *c = NULL;
		for (int i = 0; i < HL_K_MAX_CONNS && !c; i++)
			if (k->conns[i].fd < 0)
				c = &k->conns[i];
		if (!c) {
			hl_k_reply_err(&tmp, -EMFILE, "the keeper has too many connections; retry");
			drain_and_close(fd);
			continue;
		}
		*c = (struct hl_kconn){ .fd = fd,
			                .pid = cr.pid,
			                .uid = cr.uid,
			                .gid = cr.gid,
			                .last_ns = hl__now_ns() };
		hl_k_watch(k, fd, HL_K_TAG_CONN + (uint64_t)(c - k->conns));
	}
}

static void
on_conn(struct hl_keeper *k, struct hl_kconn *c, uint32_t events)
{
	struct hl_msg m;
	int rc = hl__msg_recv(c->fd, &m, NULL, 0);
	if (rc == 0) {
		if (!hl_k_on_message(k, c, &m))
			drop_conn(k, c);
		return;
	}
	if (rc == -ETIMEDOUT || rc == -EAGAIN) {
		if (events & (EPOLLHUP | EPOLLERR))
			drop_conn(k, c);
		return;
	}
	if (rc == -EPROTO) {
		/* Garbage: answer once so that a confused peer learns why,
		 * then drop it. Nothing it sent was acted on. */
		hl__log_warn("dropped pid %d: not a heirloom control message", (int)c->pid);
		hl_k_reply_err(c, -EPROTO, "not a heirloom control message (protocol %u)",
		               HL_PROTO_VERSION);
	}
	drop_conn(k, c);
}

/* ---- the loop ---- */

/* What main() loaded from, for reload(). */
static struct {
	int argc;
	char **argv;
	struct hl_cfg cfg;
} loaded;

/*
 * SIGHUP: load the configuration again (same flags, environment and file
 * rule) into a scratch copy, and apply what can change while running: the
 * log level and format. Everything else applies at the next start. A bad
 * file is logged and changes nothing. A spawned worker gets the SIGHUP too,
 * so that one `systemctl reload` reaches both. Never stops the keeper.
 */
static void
reload(struct hl_keeper *k)
{
	struct hl_kopts scratch = { 0 };
	struct hl_cfg_opt opts[HL_K_MAX_OPTS];
	struct hl_cfg c = loaded.cfg;
	char err[512];
	options(&scratch, opts, &c.nopts);
	c.opts = opts;
	int rc = hl__cfg_load(&c, loaded.argc, loaded.argv, err, sizeof(err));
	if (rc < 0) {
		hl__log_err("SIGHUP: configuration not reloaded, nothing changed: %s", err);
	} else {
		hl__log_configure(scratch.log_level, scratch.log_format);
		hl__log("SIGHUP: reloaded %s: log level %s (other options apply at the next "
		        "start)",
		        c.config_file ? c.config_file : "(no config file)", hl__log_level_name());
		hl__cfg_free(&c);
	}
	if (k->child)
		hl_k_stop_child(k, SIGHUP);
}

static void
begin_stop(struct hl_keeper *k, int sig)
{
	if (!k->stopping) {
		k->stopping = true;
		k->restart_at_ns = 0;
		hl__sd_notify("STOPPING=1");
		hl__log("stopping (SIG%s)", sigabbrev_np(sig));
		hl_k_up_stop(k);
		if (k->child) {
			hl_k_stop_child(k, SIGTERM);
			k->stop_deadline_ns =
			        hl__now_ns() + (uint64_t)k->o.stop_timeout_ms * 1000000ull;
		}
	} else if (k->child) {
		hl__log("second signal: not waiting for the hand-back");
		hl_k_stop_child(k, SIGKILL);
		k->stop_deadline_ns = 0;
	}
}

static int
loop_timeout(const struct hl_keeper *k)
{
	uint64_t now = hl__now_ns(), next = UINT64_MAX;
	if (k->restart_at_ns)
		next = k->restart_at_ns;
	if (k->stop_deadline_ns && k->stop_deadline_ns < next)
		next = k->stop_deadline_ns;
	if (k->child_recheck_ns && k->child_recheck_ns < next)
		next = k->child_recheck_ns;
	if (hl_k_wd_next_ns(k) < next)
		next = hl_k_wd_next_ns(k);
	if (hl_k_up_next_ns(k) < next)
		next = hl_k_up_next_ns(k);
	for (int i = 0; i < HL_K_MAX_CONNS; i++)
		if (k->conns[i].fd >= 0 && !k->conns[i].owner_link && !k->conns[i].held) {
			uint64_t idle = k->conns[i].last_ns + (uint64_t)HL_K_IDLE_MS * 1000000ull;
			if (idle < next)
				next = idle;
		}
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)((next - now + 999999) / 1000000);
}

static void
timers(struct hl_keeper *k)
{
	uint64_t now = hl__now_ns();
	for (int i = 0; i < HL_K_MAX_CONNS; i++) {
		struct hl_kconn *c = &k->conns[i];
		if (c->fd >= 0 && !c->owner_link && !c->held &&
		    now >= c->last_ns + (uint64_t)HL_K_IDLE_MS * 1000000ull)
			drop_conn(k, c);
	}
	if (k->stop_deadline_ns && now >= k->stop_deadline_ns) {
		hl__log_warn("the worker did not hand the table back within %ld ms",
		             (long)k->o.stop_timeout_ms);
		hl_k_stop_child(k, SIGKILL);
		k->stop_deadline_ns = 0; /* wait for the confirmed exit, however long */
	}
	if (k->child_recheck_ns && now >= k->child_recheck_ns)
		hl_k_child_exited(k);
	if (k->restart_at_ns && now >= k->restart_at_ns && !k->child && !k->stopping &&
	    !hl_k_seg_damaged(k))
		hl_k_spawn(k);
	hl_k_wd_tick(k);
	hl_k_up_tick(k);
}

static void
run(struct hl_keeper *k)
{
	while (!(k->stopping && !k->child)) {
		struct epoll_event evs[16];
		int n = epoll_wait(k->epfd, evs, 16, loop_timeout(k));
		if (n < 0 && errno != EINTR) {
			hl__log_err("epoll_wait: %s", strerror(errno));
			sleep(1); /* cannot happen; never spin if it does */
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == HL_K_TAG_LISTEN) {
				accept_all(k);
			} else if (tag == HL_K_TAG_SIGNAL) {
				struct signalfd_siginfo si;
				while (read(k->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
					if (si.ssi_signo == SIGHUP)
						reload(k);
					else
						begin_stop(k, (int)si.ssi_signo);
				}
			} else if (tag == HL_K_TAG_OWNER) {
				/* The event may be stale: a TAKE earlier in this
				 * batch can have settled that exit and given the
				 * table to a new owner. Ask the pidfd we hold now. */
				if (!hl_k_pidfd_exited(k->owner_pidfd))
					continue;
				hl_k_owner_exited(k, HL_EXIT_UNKNOWN, "exited");
				/* A worker we adopted at start (not our child) died:
				 * a supervisor starts its own now. It was serving
				 * before this keeper started, so it counts as a
				 * stable run: at once. */
				if (k->o.spawn && !k->child && !k->stopping && !k->restart_at_ns &&
				    !k->restart_disabled)
					hl_k_schedule_restart(k, UINT64_MAX);
			} else if (tag == HL_K_TAG_DUR) {
				hl_k_dur_event(k);
			} else if (tag == HL_K_TAG_UPNEW || tag == HL_K_TAG_UPOLD) {
				hl_k_up_pidfd(k, tag);
			} else if (tag == HL_K_TAG_CHILD) {
				if (k->child && hl_k_pidfd_exited(k->child_pidfd)) /* stale? */
					hl_k_child_exited(k);
			} else if (tag >= HL_K_TAG_CONN && tag < HL_K_TAG_CONN + HL_K_MAX_CONNS) {
				struct hl_kconn *c = &k->conns[tag - HL_K_TAG_CONN];
				if (c->fd >= 0)
					on_conn(k, c, evs[i].events);
			}
		}
		timers(k);
	}
}

static void
cleanup(struct hl_keeper *k)
{
	struct stat st;
	hl_k_release_at_exit(k);
	for (int i = 0; i < HL_K_MAX_CONNS; i++)
		drop_conn(k, &k->conns[i]);
	if (k->lfd >= 0) {
		/* Only our own socket file: never one a later keeper bound. */
		if (stat(k->sock_path, &st) == 0 && st.st_dev == k->sock_dev &&
		    st.st_ino == k->sock_ino)
			unlink(k->sock_path);
		close(k->lfd);
	}
	if (k->owner_pidfd >= 0)
		close(k->owner_pidfd);
	if (k->child_pidfd >= 0)
		close(k->child_pidfd);
	if (k->sigfd >= 0)
		close(k->sigfd);
	if (k->epfd >= 0)
		close(k->epfd);
	hl__seg_unmap(&k->seg);
	if (k->segfd >= 0)
		close(k->segfd);
	if (k->lockfd >= 0)
		close(k->lockfd); /* releases the lock */
}

int
main(int argc, char **argv)
{
	struct hl_keeper *k = &K;
	struct hl_cfg_opt opts[HL_K_MAX_OPTS];
	hl__log_init("heirloom-keeper");
	size_t nopts;
	char err[512];
	static const char *const foreign[] = { "worker", "ctl", NULL };
	int status = 0, ready_fd = -1;

	k->segfd = k->lockfd = k->lfd = k->epfd = k->sigfd = -1;
	k->owner_pidfd = k->child_pidfd = -1;
	k->dur.dirfd = k->dur.lockfd = k->dur.evfd = -1;
	for (int i = 0; i < HL_K_MAX_CONNS; i++)
		k->conns[i].fd = -1;

	options(&k->o, opts, &nopts);
	struct hl_cfg cfg = { .prog = "heirloom-keeper",
		              .version = VERSION_TEXT,
		              .summary = summary,
		              .section = "keeper",
		              .foreign = foreign,
		              .shared_names = hl__daemon_option_names,
		              .opts = opts,
		              .nopts = nopts };
	loaded.cfg = cfg; /* the inputs only, for reload() */
	loaded.argc = argc;
	loaded.argv = argv;
	if (hl__cfg_load(&cfg, argc, argv, err, sizeof(err)) < 0) {
		fprintf(stderr, "heirloom-keeper: %s\n", err);
		return EXIT_USAGE;
	}
	if (cfg.request != HL_CFG_RUN) {
		hl__cfg_free(&cfg);
		return 0;
	}
	if (cfg.argind < argc) {
		fprintf(stderr,
		        "heirloom-keeper: unexpected argument '%s' (a worker path is given as "
		        "--spawn-worker=PATH; see --help)\n",
		        argv[cfg.argind]);
		status = EXIT_USAGE;
		goto out_cfg;
	}
	if (k->o.print_config) {
		hl__cfg_dump(&cfg, stdout);
		goto out_cfg;
	}
	hl__log_configure(k->o.log_level, k->o.log_format);
	hl__log_debug("configuration: %s", cfg.config_file ? cfg.config_file : "(no file)");
	k->name = cfg.name;
	if (resolve_group(k)) {
		status = EXIT_USAGE;
		goto out_cfg;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!k->o.foreground && detach(&ready_fd) < 0) {
		fprintf(stderr, "heirloom-keeper: cannot detach: %s\n", strerror(errno));
		status = EXIT_USAGE;
		goto out_cfg;
	}
	k->self_start = hl__proc_start_time(getpid());
	/* A spawned worker inherits it; it needs one pidfd per client. */
	hl__nofile_raise();

	/* Signals arrive through the loop (signalfd): block them first, so
	 * that none is lost between here and the loop. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	/* A spawned worker starts with its own mask: supervise.c unblocks. */
	k->epfd = epoll_create1(EPOLL_CLOEXEC);
	k->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (k->epfd < 0 || k->sigfd < 0) {
		hl__log_err("epoll/signalfd: %s", strerror(errno));
		status = EXIT_USAGE;
		goto out;
	}
	hl_k_watch(k, k->sigfd, HL_K_TAG_SIGNAL);

	/* The socket path first (the spawned worker's argv needs it), then
	 * the segment, then the socket itself: a worker must not find a
	 * socket before the table is ready to be given. */
	if (hl__sock_path(k->name, k->o.socket, k->sock_path, sizeof(k->sock_path), NULL) < 0) {
		hl__log_err("control socket path for '%s' is invalid or too long; use --socket",
		            k->name);
		status = EXIT_TAKEN;
		goto out;
	}
	if (k->o.spawn && hl_k_find_worker(k)) {
		status = EXIT_USAGE;
		goto out;
	}
	/* Everything that can refuse the start without creating anything
	 * runs before the segment is created: a refused start leaves nothing
	 * behind. */
	if ((status = socket_dir(k)) != 0)
		goto out;
	if ((status = hl_k_dur_parse(k)) != 0 || (status = hl_k_dur_open_dir(k)) != 0)
		goto out;
	if ((status = open_segment(k, &cfg)) != 0)
		goto out;
	if ((status = hl_k_dur_check_state(k, k->seg_created)) != 0) {
		if (k->seg_created)
			drop_created(k);
		goto out;
	}
	hl_k_adopt_at_start(k);
	hl_k_wd_init(k);
	hl_k_up_init(k);
	if ((status = listen_socket(k)) != 0) {
		if (k->seg_created)
			drop_created(k);
		goto out;
	}
	hl_k_watch(k, k->lfd, HL_K_TAG_LISTEN);
	if ((status = hl_k_dur_start(k)) != 0) {
		if (k->seg_created)
			drop_created(k);
		goto out;
	}

	hl__sd_notify("READY=1");
	if (ready_fd >= 0) {
		ssize_t w = write(ready_fd, "r", 1);
		(void)w;
		close(ready_fd);
		ready_fd = -1;
	}
	if (k->o.spawn && !k->owner_pid)
		hl_k_spawn(k);
	else if (k->o.spawn)
		hl__log("not starting a worker: worker pid %d serves the table; supervising "
		        "begins when it exits",
		        (int)k->owner_pid);
	run(k);
	if (k->damaged)
		status = EXIT_DAMAGED;
out:
	/* A final snapshot at every stop but of a damaged segment: after a
	 * hand-back it is exact; with a worker still serving (one the keeper
	 * does not supervise) it is as good as a periodic one. */
	hl_k_dur_stop(k, !k->damaged && k->seg.h);
	cleanup(k);
	if (k->stopping)
		hl__log("stopped");
	if (ready_fd >= 0)
		close(ready_fd);
out_cfg:
	hl__cfg_free(&cfg);
	return status;
}
