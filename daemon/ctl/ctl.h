/* SPDX-License-Identifier: MIT */
/*
 * ctl.h: what the parts of heirloomctl share: exit codes, the parsed
 * command line, error reporting and the command entry points.
 *
 * heirloomctl is a tool for people and scripts. Its contract with scripts
 * is the exit code, the "heirloomctl: ..." line on stderr and, with --json,
 * one JSON document on stdout (one per line for watch). Commands that only
 * read (status, stats, keys, inspect, get, observers, endpoints, segment
 * inspect) map the segment read-only and never claim an endpoint, so they
 * work with no worker running and with read permission alone.
 */
#ifndef HL_CTL_H
#define HL_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: a script may rely on these. */
#define CTL_OK        0
#define CTL_NOTFOUND  1 /* no such key (get, del, inspect) */
#define CTL_USAGE     2 /* bad command line */
#define CTL_SEGMENT   3 /* the segment is missing or unusable */
#define CTL_FAILED    4 /* the request failed: worker error, timeout, refusal */
#define CTL_CONFLICT  5 /* set/del --if-rev: the key is at another revision */
#define CTL_ROLLBACK  6 /* upgrade: the new worker failed; the previous binary serves */
#define CTL_REFUSED   7 /* upgrade: refused before anything changed */
#define CTL_COMPACTED 8 /* watch --rev: the history no longer reaches that revision */

#define CTL_MAX_POS  4
#define CTL_MAX_OPTS 12

/* One option of a command: "--count N" (has_arg) or "--force". */
struct ctl_opt {
	const char *name;
	int has_arg;
};

/* The command line after the global options, parsed against a command's
 * options. Strings point into argv. */
struct ctl_args {
	const char *pos[CTL_MAX_POS];
	int npos;
	const char *val[CTL_MAX_OPTS]; /* value of option i, or NULL */
	int set[CTL_MAX_OPTS];         /* option i was given */
};

#define CTL_MAX_NAMES 64

struct ctl {
	const char *name; /* segment name: --name, $HEIRLOOM_NAME, "default" */
	/* Every --name given, without repeats (metrics and stats --prometheus
	 * read several segments; the other commands accept one). */
	const char *names[CTL_MAX_NAMES];
	int nnames;
	int json;
	const char *cmd; /* for messages: "get", "segment remove", ... */
};

/* Report an error on stderr as "heirloomctl: CMD: message" and, with
 * --json, as {"error": ...} on stdout. ERR is 0 or a negative error code
 * (its hl_err_name goes into the JSON). Returns CODE, the exit code. */
int ctl_fail(const struct ctl *c, int code, int err, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* ctl_fail() for an error that came from opening the segment: the exit code
 * and wording follow from ERR (missing, not heirloom, other version ...). */
int ctl_fail_segment(const struct ctl *c, int err);

/* A key given on the command line: 1..HL_KEY_MAX bytes, else a usage error
 * (reported; returns CTL_USAGE). 0 when fine. */
int ctl_check_key(const struct ctl *c, const char *key);

/* Send M to the keeper's control socket (SOCK_OPT, else $HEIRLOOM_SOCKET,
 * else the default for c->name) and wait up to TIMEOUT_MS for its answer
 * in R. CTL_OK, or the exit code of the error reported: WHY ends the
 * message when no keeper listens (what the keeper is needed for), AFTER
 * the one when it does not answer (where to look). keeper_ask.c. */
struct hl_msg;
int ctl_keeper_ask(struct ctl *c, const char *sock_opt, const struct hl_msg *m, struct hl_msg *r,
                   int timeout_ms, const char *why, const char *after);

/* Parse a decimal in [min, max] (strict: the whole string). 0 or -1. */
int ctl_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* The parts of a segment's description that several commands print
 * (cmd_status.c): the "capacities" object of header H, and the
 * "size_bytes" object of what each region of a layout costs. */
struct out;
struct hl_shm_header;
struct hl_layout_sizes;
void ctl_write_capacities(struct out *o, const struct hl_shm_header *h);
void ctl_write_sizes(struct out *o, const struct hl_layout_sizes *z);

/* Commands: each returns an exit code. ARGS was parsed against the
 * command's own option table (see main.c). */
int ctl_cmd_status(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_stats(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_keys(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_inspect(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_get(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_observers(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_endpoints(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_set(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_del(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_watch(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_segment(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_top(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_size(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_upgrade(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_snapshot(struct ctl *c, const struct ctl_args *a);
int ctl_cmd_metrics(struct ctl *c, const struct ctl_args *a);

/* The Prometheus exposition of every segment the command line names
 * (cmd_metrics.c), on stdout: stats --prometheus and metrics without
 * --listen. Every segment must be readable; else nothing is written and
 * the first one's error is reported. Returns an exit code. */
int ctl_prometheus_stdout(struct ctl *c);

/* Option indexes of each command's table (main.c defines the tables). */
enum { STATS_PROMETHEUS };
enum { METRICS_LISTEN };
enum { OBSERVERS_PID };
enum { GET_REV, GET_PREFIX };
enum { SET_META, SET_TIMEOUT, SET_IF_REV };
enum { DEL_TIMEOUT, DEL_IF_REV };
enum {
	WATCH_COUNT,
	WATCH_TIMEOUT,
	WATCH_FILTER,
	WATCH_NO_OLD,
	WATCH_PREFIX,
	WATCH_REV,
	WATCH_PROGRESS
};
enum { SEGMENT_FORCE, SEGMENT_FORCE_LIVE };
enum { UPGRADE_WORKER, UPGRADE_TIMEOUT, UPGRADE_SOCKET };
enum { SNAPSHOT_TIMEOUT, SNAPSHOT_SOCKET };
enum {
	SIZE_SHARDS,
	SIZE_KEYS,
	SIZE_OBSERVERS,
	SIZE_ENDPOINTS,
	SIZE_VALUE,
	SIZE_HEAP,
	SIZE_REQ_RING,
	SIZE_EV_RING,
	SIZE_HISTORY
};

#endif /* HL_CTL_H */
