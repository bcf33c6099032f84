/* SPDX-License-Identifier: MIT */
/*
 * proto.h: the heir protocol between heirloom-keeper and heirloom-worker:
 * where the control socket lives, the messages on it, and how the owner
 * record in the segment header is written and read. Shared by both daemons
 * so that they cannot disagree; it must never decide policy (who may take
 * the table, when to reclaim): that is the keeper's (daemon/keeper/).
 *
 * The conversation (AF_UNIX, SOCK_SEQPACKET: one message per packet, so a
 * message is never split or merged):
 *
 *   worker                               keeper
 *   TAKE {pid, start, name}      --->    refuses (ERR -EBUSY + text) while a
 *                                        living worker owns the table; else
 *                                        writes owner = worker, epoch + 1,
 *                                        handoffs + 1, logs HL_LOG_HANDOFF,
 *                                        watches the worker's pidfd and
 *   <--- OK {epoch} + segment fd (SCM_RIGHTS)
 *   ... serves; keeps the connection open as its link to the keeper ...
 *   HELLO {pid, epoch, name}     --->    (after the keeper restarted) checks
 *   <--- OK {epoch} / ERR                that the sender owns the table at
 *                                        that epoch: the link is back
 *   GIVEBACK {pid, epoch}        --->    (clean stop, threads joined) owner =
 *   <--- OK {epoch}                      keeper, epoch + 1, HL_LOG_HANDBACK
 *
 * An upgrade (daemon/keeper/upgrade.c; the steps: docs/architecture.md):
 *
 *   heirloomctl UPGRADE {pid, epoch = timeout ms, text = worker path} --->
 *   keeper starts the new worker N (HEIRLOOM_UPGRADE=1 in its environment)
 *   N: TAKE {pid, code = its HL_LAYOUT_VERSION}  ---> kept unanswered, or
 *                                        ERR HL_EVERSION (N never touches it)
 *   keeper -> old worker O (on its link): YIELD {epoch}
 *   O: threads joined after their batch; HANDOVER {pid, epoch} ---> owner
 *                                        = N, epoch + 1; OK to O, then
 *                                        OK {epoch} + fd to N
 *   keeper, once N set worker_ready: RETIRE to O (exits 0), OK to ctl;
 *   on a failure: N killed, the table taken back on its confirmed exit,
 *   RESUME to O (it executes its own binary again: same pid, and TAKE
 *   is answered as a repeat or given anew), ERR to ctl.
 *
 * The keeper never takes the table back on a message or a timeout, only
 * when the worker's pidfd says it exited (or it gave it back): a worker that
 * is paused or slow keeps it. Every request is answered by OK or ERR, and a
 * peer that sends anything else (wrong size, magic, version, type, or a
 * descriptor) gets ERR -EPROTO and is dropped.
 */
#ifndef HL_DAEMON_PROTO_H
#define HL_DAEMON_PROTO_H

#include "layout.h"
#include "owner.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HL_PROTO_MAGIC   0x504b4c48u /* "HLKP" little-endian */
#define HL_PROTO_VERSION 1u

/* Largest socket path (sun_path holds 108 bytes with the NUL). */
#define HL_SOCK_PATH_MAX 108

enum hl_msg_type {
	HL_MSG_TAKE = 1,     /* worker -> keeper: give me the table */
	HL_MSG_GIVEBACK = 2, /* worker -> keeper: I stopped serving; take it back */
	HL_MSG_HELLO = 3,    /* worker -> keeper: I own the table at `epoch` (re-link) */
	HL_MSG_UPGRADE = 4,  /* heirloomctl -> keeper: upgrade the worker to `text`
	                      * ("" = the same path), `epoch` = timeout in ms */
	HL_MSG_HANDOVER = 5, /* old worker -> keeper: threads stopped after YIELD;
	                      * give the table to the new worker */
	HL_MSG_SNAPSHOT = 6, /* heirloomctl -> keeper: write a snapshot now; OK
	                      * once it is on disk (`epoch` = its revision) */
	HL_MSG_YIELD = 32,   /* keeper -> owner worker: stop after this batch and
	                      * send HANDOVER */
	HL_MSG_RETIRE = 33,  /* keeper -> old worker: the new one serves; exit */
	HL_MSG_RESUME = 34,  /* keeper -> old worker: the upgrade failed; run
	                      * your own binary again and take the table */
	HL_MSG_OK = 64,      /* keeper -> worker: done; `epoch` is the owner epoch now */
	HL_MSG_ERR = 65,     /* keeper -> worker: refused; `code` and `text` say why */
};

/* One message, the same fixed size both ways (a packet of another size is
 * garbage). Integers are in host order: both ends run on one machine. */
struct hl_msg {
	uint32_t magic;   /* HL_PROTO_MAGIC */
	uint16_t version; /* HL_PROTO_VERSION */
	uint16_t type;    /* enum hl_msg_type */
	int32_t code;     /* ERR: negative errno or HL_E*; TAKE: the worker's
	                   * HL_LAYOUT_VERSION (0 from older workers); else 0 */
	uint32_t pid;     /* requests: the sender's pid (checked against SO_PEERCRED);
	                   * replies: the keeper's pid */
	uint64_t epoch;   /* HELLO/GIVEBACK: the epoch the worker holds; OK: the
	                   * owner epoch after the request */
	uint64_t start;   /* the sender's process start time (hl__proc_start_time) */
	char text[96];    /* requests: segment name; ERR: reason; NUL-terminated */
};
_Static_assert(sizeof(struct hl_msg) == 128, "the message size is the protocol");

/* The code of a HL_LOG_WORKER_EXIT record when the exit status is not known:
 * the keeper is not the worker's parent (it was started by someone else, or
 * by a keeper that has since died), so only the exit itself was seen, through
 * the pidfd. The record's text then says "exited". */
/* HL_EXIT_UNKNOWN: see lib/layout.h */

/* A message of TYPE with magic, version and the caller's pid filled in. */
void hl__msg_init(struct hl_msg *m, enum hl_msg_type type);

/* The text field as a C string even if the peer did not terminate it. */
const char *hl__msg_text(struct hl_msg *m);

/*
 * The control socket's path for segment NAME into buf (len bytes):
 * OVERRIDE when non-empty, else DIR/heirloom-NAME.sock where DIR is the first
 * of $RUNTIME_DIRECTORY (its first entry), /run/heirloom when running as
 * root, $XDG_RUNTIME_DIR, /tmp/heirloom-$UID. *dir_is_ours (may be NULL) is
 * set to 1 when DIR is one heirloom creates (the last two of that list, as
 * root or not) and 0 otherwise. Returns 0, -EINVAL (bad name), or
 * -ENAMETOOLONG (the path does not fit a socket address).
 */
int hl__sock_path(const char *name, const char *override, char *buf, size_t len, int *dir_is_ours);

/*
 * Make sure the directory part of PATH exists and is safe to listen in:
 * created 0750 (group GID unless -1) if missing; refused with -EPERM if it
 * is not a directory, is a symbolic link, belongs to another user than us
 * or root, or is writable by group or others while not sticky. Only the
 * keeper calls this, and only for directories heirloom owns (dir_is_ours).
 */
int hl__sock_dir_prepare(const char *path, gid_t gid);

/* The same check without creating anything, for a directory someone else
 * provides (--socket, $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR): 0, -ENOENT,
 * or -EPERM when it is not a directory, is a symbolic link, belongs to
 * another user than us or root, or is writable by group or others while
 * not sticky. */
int hl__sock_dir_check(const char *path);

/* Connect to the keeper's socket at PATH: a blocking, close-on-exec
 * SOCK_SEQPACKET socket in *fd. Returns 0 or -errno (-ENOENT, -ECONNREFUSED:
 * no keeper there now). */
int hl__sock_connect(const char *path, int *fd);

/* Send M, with descriptor PASSFD attached when >= 0 (SCM_RIGHTS). Never
 * raises SIGPIPE; never blocks when FD is non-blocking (then -EAGAIN).
 * Returns 0 or -errno. */
int hl__msg_send(int fd, const struct hl_msg *m, int passfd);

/*
 * Receive one message into M. A descriptor that came with it is stored in
 * *passfd (close-on-exec) when passfd is non-NULL and exactly one came;
 * every other received descriptor is closed, so a peer cannot make us leak.
 * Waits at most TIMEOUT_MS (-1 forever, 0 not at all).
 * Returns 0, -EPIPE (the peer closed), -ETIMEDOUT, -EPROTO (not a message of
 * this protocol: wrong size, magic, version, or unexpected descriptors; *M
 * is then undefined), or another -errno. On failure *passfd is -1.
 */
int hl__msg_recv(int fd, struct hl_msg *m, int *passfd, int timeout_ms);

/* The owner record (hl__owner_write/read/repair) is lib/owner.h. */

/* Name of a role for logs: "none", "keeper", "worker", "unknown". */
const char *hl__role_name(uint32_t role);

#endif /* HL_DAEMON_PROTO_H */
