/* SPDX-License-Identifier: MIT */
/*
 * keeper.h: heirloom-keeper's process state and the contracts between its
 * parts:
 *   main.c       options, the segment (create or validate, lock, map), the
 *                control socket, the event loop, signals, stop
 *   handoff.c    the heir protocol: giving the table (TAKE), taking it back
 *                on a confirmed exit or a clean GIVEBACK, re-linking a
 *                worker (HELLO), adopting a living owner at start
 *   supervise.c  --spawn-worker: starting the worker, restarting it (at
 *                once after a stable run, with back-off after quick
 *                exits: restart.h), stopping it
 *   watchdog.c   --hang-timeout: killing a worker whose heartbeats stopped
 *                (then the crash path takes over); systemd's WATCHDOG=1
 *   upgrade.c    heirloomctl upgrade: starting the new worker, the planned
 *                hand-over from the old one, commit or rollback
 *   durable.c    --durability: the state directory and its writer thread
 *
 * The keeper is one thread around one epoll set; nothing here is shared
 * between threads but struct hl_k_dur's atomics, with the durability
 * writer (durable.c), the one other thread, which does the blocking file
 * I/O. The loop does almost nothing so that it almost never fails: no
 * allocation after start, no blocking call (every socket is non-blocking,
 * every child is reaped through its pidfd). The writer allocates its
 * buffers; its failures are its own (logged, "not durable"), never the
 * loop's.
 */
#ifndef HL_KEEPER_H
#define HL_KEEPER_H

#include "layout.h"
#include "log.h"
#include "proto.h"
#include "restart.h"
#include "segment.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define HL_K_MAX_CONNS 32
/* A connection that is not the owner's link and says nothing this long is
 * dropped, so that idle peers cannot hold every slot. */
#define HL_K_IDLE_MS 10000

/* epoll tags (data.u64); a connection is HL_K_TAG_CONN + its slot. */
enum {
	HL_K_TAG_LISTEN = 1,
	HL_K_TAG_SIGNAL,
	HL_K_TAG_OWNER, /* pidfd of an owner that is not our child */
	HL_K_TAG_CHILD, /* pidfd of the worker we spawned */
	HL_K_TAG_UPNEW, /* pidfd of an upgrade's new worker, before it has the table */
	HL_K_TAG_UPOLD, /* pidfd of an upgrade's old worker, after it handed over */
	HL_K_TAG_DUR,   /* eventfd of the durability writer (durable.c) */
	HL_K_TAG_CONN = 16,
};

struct hl_kconn {
	int fd;    /* -1 = free slot */
	pid_t pid; /* SO_PEERCRED at accept */
	uid_t uid;
	gid_t gid;
	uint64_t last_ns; /* CLOCK_MONOTONIC of the last message (or accept) */
	bool owner_link;  /* the owner worker's connection: never idles out */
	bool held;        /* part of an upgrade (upgrade.c): never idles out */
};

/* An upgrade in progress (upgrade.c). */
enum hl_k_up_phase {
	HL_K_UP_IDLE,
	HL_K_UP_STARTING,   /* new worker started; waiting for its TAKE */
	HL_K_UP_YIELDING,   /* YIELD sent to the old worker; waiting for HANDOVER */
	HL_K_UP_RECOVERING, /* the new worker has the table; waiting for worker_ready */
	HL_K_UP_ROLLBACK,   /* failed; waiting for the previous binary to serve again */
};

struct hl_k_upgrade {
	enum hl_k_up_phase phase;
	int ctl;      /* conn slot of the heirloomctl that asked, -1 = gone */
	int new_conn; /* conn slot of the new worker's unanswered TAKE, -1 */
	int old_conn; /* conn slot of the old worker's link, -1 */
	pid_t new_pid;
	int new_pidfd; /* tag HL_K_TAG_UPNEW until the new worker has the table */
	uint64_t new_started_ns;
	pid_t old_pid; /* the old worker, parked after HANDOVER (tag HL_K_TAG_UPOLD) */
	int old_pidfd;
	pid_t expect; /* phase ROLLBACK: the worker that must serve again (0 = any) */
	uint64_t timeout_ms, started_ns, yield_ns, deadline_ns;
	int32_t err;   /* the failure to report (0 = none yet) */
	char why[160]; /* what went wrong, for heirloomctl and the log */
	char new_path[4096];
};

/* Options, resolved by the config module (flag > env > file > default). */
struct hl_kopts {
	char *spawn;       /* --spawn-worker: NULL = do not supervise */
	char *worker_args; /* extra words for the spawned worker */
	char *socket;      /* --socket override, NULL = the runtime-dir rule */
	char *group;       /* --group name or number, NULL = none */
	unsigned mode;     /* segment and socket mode */
	bool foreground;
	int64_t stop_timeout_ms;
	int64_t restart_min_ms, restart_max_ms; /* supervisor back-off bounds */
	int64_t restart_stable_ms;              /* a run this long ends with a restart at once */
	int64_t hang_timeout_ms;                /* watchdog.c: 0 = hang detection off */
	int64_t shards, max_keys, max_observers, max_endpoints, max_value;
	int64_t heap, req_ring, ev_ring, history;
	bool print_config;
	char *log_level, *log_format; /* log.h's words; SIGHUP reloads them */
	char *durability;             /* none, snapshot, log */
	char *state_dir;              /* NULL = /var/lib/heirloom/NAME */
	int64_t snapshot_interval_ms; /* 0 = only on demand and at stop */
	int64_t compact_size;         /* log mode: compact past this many bytes */
};

/* durable.c: the state directory and the writer thread. The main thread
 * owns everything here but the atomics, which the writer shares. */
struct hl_k_dur {
	uint32_t mode; /* HL_DUR_* */
	char dir[HL_STATE_DIR_MAX];
	int dirfd, lockfd;
	int evfd; /* writer -> main: a snapshot request was answered */
	pthread_t thread;
	bool running;
	int64_t interval_ms, compact_bytes, test_delay_us;
	/* Set before the thread starts, then the writer's: */
	uint64_t next_log_seq;
	uint64_t start_pos[HL_SHARDS_MAX];
	bool start_snapshot;
	/* Shared: requests (main: fetch_add), answered (writer: release),
	 * the last answer's error, the stop. */
	_Atomic uint64_t snap_req, snap_done;
	_Atomic int32_t snap_rc;
	_Atomic int stop, final_snapshot;
	/* Main thread: per connection slot, the request it waits for. */
	uint64_t waiting[HL_K_MAX_CONNS];
};

struct hl_keeper {
	const char *name;
	struct hl_kopts o;
	gid_t gid; /* from o.group, (gid_t)-1 = none */
	uint64_t self_start;

	/* the segment: created or validated at start, held for life */
	int segfd;  /* O_RDWR; the descriptor given to workers */
	int lockfd; /* a second open of the object, flock'ed: one keeper per segment */
	struct hl_seg seg;
	bool seg_created; /* this start created it: removed if the start fails */

	/* the control socket */
	char sock_path[HL_SOCK_PATH_MAX];
	dev_t sock_dev;
	ino_t sock_ino; /* of the socket we bound: unlink only our own */
	int lfd;
	int epfd;
	int sigfd;
	struct hl_kconn conns[HL_K_MAX_CONNS];

	/* The worker that owns the table, if one does (owner record role
	 * worker). owner_pidfd is -1 when it is our child: then child_pidfd
	 * watches it and gives its exit status. */
	pid_t owner_pid;
	uint64_t owner_start;
	int owner_pidfd;

	/* --spawn-worker */
	char worker_path[4096];
	pid_t child; /* 0 = none running */
	int child_pidfd;
	uint64_t child_started_ns;
	bool child_handed_back;      /* it gave the table back cleanly: do not restart */
	uint64_t child_recheck_ns;   /* its pidfd said exited but waitid found no zombie
	                              * yet (a tracer holds it): look again then, instead
	                              * of spinning on a readable pidfd */
	uint64_t restart_at_ns;      /* 0 = no restart scheduled */
	struct hl_k_backoff backoff; /* restart.h */
	struct hl_k_upgrade up;      /* upgrade.c */
	struct hl_k_dur dur;         /* durable.c */

	/* stopping (SIGTERM/SIGINT) */
	bool stopping;
	bool restart_disabled; /* a clean hand-back that we did not ask for */
	/* The segment was truncated or replaced under us (issue 21): 0, or
	 * HL_ETRUNCATED / -ESTALE. Set once, logged once; the keeper then
	 * never touches the mapping again, starts no worker and stops with
	 * exit status 6 (hl_k_seg_damaged()). */
	int damaged;
	uint64_t stop_deadline_ns;
};

/* main.c */
void hl_k_watch(struct hl_keeper *k, int fd, uint64_t tag);
void hl_k_unwatch(struct hl_keeper *k, int fd);

/* handoff.c */
/* Whether PIDFD's process has exited (the pidfd is readable), without
 * blocking. The only test of "exited" the keeper acts on. */
bool hl_k_pidfd_exited(int pidfd);
void hl_k_seglog(struct hl_keeper *k, uint32_t kind, int32_t code, uint32_t pid, uint64_t epoch,
                 const char *text);
int hl_k_adopt_at_start(struct hl_keeper *k);
bool hl_k_on_message(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m);
void hl_k_owner_exited(struct hl_keeper *k, int32_t code, const char *how);
void hl_k_reply_err(struct hl_kconn *c, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void hl_k_release_at_exit(struct hl_keeper *k);
/* Whether the segment is damaged (truncated or replaced); the first time it
 * is found so, log it and begin the stop. Call before touching the mapping
 * after a worker may have gone. */
bool hl_k_seg_damaged(struct hl_keeper *k);

/* watchdog.c: call hl_k_wd_init() once the segment is mapped, then
 * hl_k_wd_tick() on every turn of the loop, which must come back by
 * hl_k_wd_next_ns() (CLOCK_MONOTONIC; UINT64_MAX = nothing due). */
void hl_k_wd_init(struct hl_keeper *k);
uint64_t hl_k_wd_next_ns(const struct hl_keeper *k);
void hl_k_wd_tick(struct hl_keeper *k);

/* supervise.c */
int hl_k_find_worker(struct hl_keeper *k);
int hl_k_spawn(struct hl_keeper *k);
/* Start PATH with the worker's arguments and, when UPGRADE,
 * HEIRLOOM_UPGRADE=1 in its environment: *pid and *pidfd (not watched). */
int hl_k_spawn_path(struct hl_keeper *k, const char *path, bool upgrade, pid_t *pid, int *pidfd);
/* Schedule the next start of the worker after one that ran RAN_MS exited
 * (restart.h decides the delay), and log it. */
void hl_k_schedule_restart(struct hl_keeper *k, uint64_t ran_ms);
void hl_k_child_exited(struct hl_keeper *k);
void hl_k_stop_child(struct hl_keeper *k, int sig);
void hl_k_exit_text(int32_t code, char *buf, size_t len);

/* upgrade.c. hl_k_up_init() once at start. The rest are called by the
 * parts that see the event: a message (UPGRADE, HANDOVER, the new worker's
 * TAKE), a pidfd, a dropped connection, the loop's timers, the stop. The
 * bool ones return true when the upgrade took the event over. */
void hl_k_up_init(struct hl_keeper *k);
bool hl_k_up_on_request(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m);
bool hl_k_up_on_take(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m, bool *keep);
bool hl_k_up_on_handover(struct hl_keeper *k, struct hl_kconn *c, struct hl_msg *m);
/* After the child PID exited and the crash path ran: true when the
 * upgrade decides what comes next (no restart by the supervisor). */
bool hl_k_up_child_exited(struct hl_keeper *k, pid_t pid);
void hl_k_up_pidfd(struct hl_keeper *k, uint64_t tag);
void hl_k_up_conn_closed(struct hl_keeper *k, int slot);
uint64_t hl_k_up_next_ns(const struct hl_keeper *k);
void hl_k_up_tick(struct hl_keeper *k);
void hl_k_up_stop(struct hl_keeper *k);

/* durable.c, in the order main() calls them: the mode and directory from
 * the options; the directory (created, checked, locked); the state in it
 * checked and the header's durability lines set once the segment is open
 * (CREATED: a restore is due if there is state); the writer thread. Each
 * returns 0 or an exit status, having logged why. */
int hl_k_dur_parse(struct hl_keeper *k);
int hl_k_dur_open_dir(struct hl_keeper *k);
int hl_k_dur_check_state(struct hl_keeper *k, bool created);
/* Whether the state in DIR fits segment H's capacities (statefit.c): 0, or
 * -ENOSPC with what does not fit in WHY (-ENOMEM: could not tell, WHY
 * says so). A lower bound: a pass does not promise the restore fits. */
int hl_k_state_fits(const char *dir, const struct hl_shm_header *h, char *why, size_t len);
int hl_k_dur_start(struct hl_keeper *k);
/* heirloomctl snapshot on connection C: 1 when it waits for the writer
 * (answered later by hl_k_dur_event()), 0 when answered now. */
int hl_k_dur_request(struct hl_keeper *k, struct hl_kconn *c);
void hl_k_dur_event(struct hl_keeper *k);
void hl_k_dur_conn_closed(struct hl_keeper *k, int slot);
/* Stop the writer: the log's last records, and when CLEAN (the table was
 * given back or never served) a final snapshot. */
void hl_k_dur_stop(struct hl_keeper *k, bool clean);

#endif /* HL_KEEPER_H */
