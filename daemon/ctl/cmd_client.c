/* SPDX-License-Identifier: MIT */
/*
 * cmd_client.c: the commands that go through the worker: set, del and
 * watch. They open a real client (hl_open claims an endpoint, released by
 * hl_close or, if we die, by the worker's process monitor).
 *
 * These commands first wait, read-only, until a worker serves (up to
 * --timeout) and queue nothing if none does. A request that then gets no
 * answer in time is withdrawn by the library unless a worker already took
 * it (heirloom.h, "Outcomes"): the message says which.
 */
#include "ctl.h"
#include "out.h"
#include "util.h"
#include "view.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 5000

static int
parse_timeout(struct ctl *c, const char *s, int *ms)
{
	uint64_t v;
	if (ctl_parse_u64(s, 1, INT32_MAX, &v))
		return ctl_fail(c, CTL_USAGE, 0,
		                "--timeout needs milliseconds (1 or more), not '%s'", s);
	*ms = (int)v;
	return 0;
}

static void
sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Wait until a worker serves NAME, at most TIMEOUT_MS (-1 forever): 0,
 * 1 when none did, or a negative error opening the segment. */
static int
wait_worker(const char *name, int timeout_ms)
{
	uint64_t deadline =
	        timeout_ms < 0 ? UINT64_MAX : hl__now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		struct view v;
		int rc = view_open(&v, name);
		if (rc)
			return rc;
		struct view_owner ow;
		view_owner(&v, &ow);
		int ready = atomic_load_explicit(&v.seg.h->worker_ready, memory_order_acquire);
		view_close(&v);
		if (ready && ow.role == HL_ROLE_WORKER && ow.alive)
			return 0;
		if (hl__now_ns() >= deadline)
			return 1;
		sleep_ms(10);
	}
}

/* Wait for a worker, then open a client. Returns CTL_OK with *out set, or
 * the exit code after reporting. */
static int
open_client(struct ctl *c, uint32_t flags, int timeout_ms, struct hl_client **out)
{
	int rc = wait_worker(c->name, timeout_ms);
	if (rc < 0)
		return ctl_fail_segment(c, rc);
	if (rc > 0)
		return ctl_fail(c, CTL_FAILED, HL_ENOWORKER,
		                "no worker is serving segment '%s' (waited %d ms); nothing was "
		                "queued",
		                c->name, timeout_ms);
	struct hl_open_opts o = { .flags = flags, .timeout_ms = timeout_ms };
	rc = hl_open(c->name, &o, out);
	if (rc)
		return ctl_fail_segment(c, rc);
	return CTL_OK;
}

/* Report the error of a request that was queued (the failure contract,
 * heirloom.h "Outcomes"): -EAGAIN, it was withdrawn and never applies;
 * -ETIMEDOUT, a worker took it and it will be applied exactly once. */
static int
request_failed(struct ctl *c, int rc, int timeout_ms)
{
	if (rc == -EAGAIN)
		return ctl_fail(c, CTL_FAILED, rc,
		                "no worker took the request within %d ms; it was withdrawn and "
		                "changed nothing",
		                timeout_ms);
	if (rc == -ETIMEDOUT)
		return ctl_fail(c, CTL_FAILED, rc,
		                "the worker took the request but did not answer within %d ms; it "
		                "will be applied exactly once when a worker serves",
		                timeout_ms);
	return ctl_fail(c, CTL_FAILED, rc, "%s", hl_strerror(rc));
}

static int
print_ok(struct ctl *c, const char *key)
{
	if (!c->json)
		return CTL_OK;
	struct out o;
	out_init(&o, stdout, 1);
	out_obj_begin(&o, NULL);
	out_bool(&o, "ok", 1);
	out_str(&o, "key", key);
	out_obj_end(&o);
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}

/* --if-rev R: a revision, 0 included. 0 when fine. */
static int
parse_if_rev(struct ctl *c, const char *s, uint64_t *rev)
{
	if (ctl_parse_u64(s, 0, UINT64_MAX, rev))
		return ctl_fail(c, CTL_USAGE, 0, "--if-rev needs a revision (0 or more), not '%s'",
		                s);
	return 0;
}

/* The answer of a compare-and-set: success prints the key's revision now
 * (so that a script can chain the next --if-rev); a conflict exits
 * CTL_CONFLICT and prints the current revision, on stdout (plain) or in
 * the error object (--json), so that a retry loop needs no second read. */
static int
print_cond(struct ctl *c, const char *key, int rc, uint64_t if_rev, uint64_t cur)
{
	if (rc == HL_ECONFLICT) {
		fflush(stdout);
		fprintf(stderr,
		        "heirloomctl: %s: conflict: '%s' is at revision %llu, not %llu; "
		        "nothing changed\n",
		        c->cmd, key, (unsigned long long)cur, (unsigned long long)if_rev);
		struct out o;
		out_init(&o, stdout, 1);
		if (c->json) {
			out_obj_begin(&o, NULL);
			out_str(&o, "error", hl_err_name(rc));
			out_i64(&o, "code", rc);
			out_str(&o, "message", "conflict: the key is at another revision");
			out_i64(&o, "exit_code", CTL_CONFLICT);
			out_str(&o, "key", key);
			out_u64(&o, "revision", cur);
			out_u64(&o, "expected_revision", if_rev);
			out_obj_end(&o);
			out_finish(&o);
		} else {
			printf("%llu\n", (unsigned long long)cur);
		}
		return CTL_CONFLICT;
	}
	if (c->json) {
		struct out o;
		out_init(&o, stdout, 1);
		out_obj_begin(&o, NULL);
		out_bool(&o, "ok", 1);
		out_str(&o, "key", key);
		out_u64(&o, "revision", cur);
		out_obj_end(&o);
		return out_finish(&o) ? CTL_FAILED : CTL_OK;
	}
	printf("%llu\n", (unsigned long long)cur);
	return fflush(stdout) ? CTL_FAILED : CTL_OK;
}

/* The value of "set KEY -": all of stdin, binary (NUL bytes included), at
 * most the segment's max_value bytes. Read before any endpoint is claimed,
 * so that a slow writer holds none. CTL_OK with *buf (malloc'ed) and *len,
 * or the exit code after reporting. */
static int
read_stdin_value(struct ctl *c, char **buf, size_t *len)
{
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	size_t max = v.seg.h->max_value;
	view_close(&v);
	/* One byte more than the limit tells "too large" from "exactly". */
	char *b = malloc(max + 1);
	if (!b)
		return ctl_fail(c, CTL_FAILED, -ENOMEM, "out of memory");
	size_t n = 0;
	while (n <= max) {
		ssize_t k = read(STDIN_FILENO, b + n, max + 1 - n);
		if (k == 0)
			break;
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			rc = -errno;
			free(b);
			return ctl_fail(c, CTL_FAILED, rc, "cannot read the value from stdin: %s",
			                hl_strerror(rc));
		}
		n += (size_t)k;
	}
	if (n > max) {
		free(b);
		return ctl_fail(c, CTL_FAILED, -EMSGSIZE,
		                "the value on stdin is larger than the segment's limit of %zu "
		                "bytes; nothing was sent",
		                max);
	}
	*buf = b;
	*len = n;
	return CTL_OK;
}

int
ctl_cmd_set(struct ctl *c, const struct ctl_args *a)
{
	const char *key = a->pos[0], *val = a->pos[1], *meta = a->val[SET_META];
	size_t val_len = strlen(val);
	char *stdin_val = NULL;
	int timeout = DEFAULT_TIMEOUT_MS;
	if (ctl_check_key(c, key))
		return CTL_USAGE;
	if (a->set[SET_TIMEOUT] && parse_timeout(c, a->val[SET_TIMEOUT], &timeout))
		return CTL_USAGE;
	uint64_t if_rev = 0, cur = 0;
	int cond = a->set[SET_IF_REV];
	if (cond && parse_if_rev(c, a->val[SET_IF_REV], &if_rev))
		return CTL_USAGE;
	size_t meta_len = meta ? strlen(meta) : 0;
	if (meta_len > HL_META_MAX)
		return ctl_fail(c, CTL_USAGE, -EMSGSIZE, "--meta is at most %u bytes, not %zu",
		                HL_META_MAX, meta_len);
	if (strcmp(val, "-") == 0) {
		int code = read_stdin_value(c, &stdin_val, &val_len);
		if (code)
			return code;
		val = stdin_val;
	}
	struct hl_client *cl = NULL;
	int rc = open_client(c, HL_OPEN_SYNC, timeout, &cl);
	if (rc) {
		free(stdin_val);
		return rc;
	}
	struct hl_caps caps;
	hl_caps(cl, &caps);
	if (cond)
		rc = hl_publish_if(cl, key, strlen(key), val, val_len, meta, meta_len, if_rev,
		                   &cur);
	else
		rc = hl_publish(cl, key, strlen(key), val, val_len, meta, meta_len);
	hl_close(cl);
	free(stdin_val);
	if (cond && (rc == 0 || rc == HL_ECONFLICT))
		return print_cond(c, key, rc, if_rev, cur);
	if (rc == -EMSGSIZE)
		return ctl_fail(c, CTL_FAILED, rc,
		                "value of %zu bytes is larger than the segment's limit of %u bytes",
		                val_len, caps.max_value);
	if (rc == -ENOSPC)
		return ctl_fail(c, CTL_FAILED, rc, "the table is full: %s", hl_strerror(rc));
	if (rc)
		return request_failed(c, rc, timeout);
	return print_ok(c, key);
}

int
ctl_cmd_del(struct ctl *c, const struct ctl_args *a)
{
	const char *key = a->pos[0];
	int timeout = DEFAULT_TIMEOUT_MS;
	if (ctl_check_key(c, key))
		return CTL_USAGE;
	if (a->set[DEL_TIMEOUT] && parse_timeout(c, a->val[DEL_TIMEOUT], &timeout))
		return CTL_USAGE;
	if (a->set[DEL_IF_REV]) {
		/* Compare-and-set: the worker decides, missing key included
		 * (a conflict with 0, or nothing to do "if 0"). */
		uint64_t if_rev = 0, cur = 0;
		if (parse_if_rev(c, a->val[DEL_IF_REV], &if_rev))
			return CTL_USAGE;
		struct hl_client *cl = NULL;
		int rc = open_client(c, HL_OPEN_SYNC, timeout, &cl);
		if (rc)
			return rc;
		rc = hl_delete_if(cl, key, strlen(key), if_rev, &cur);
		hl_close(cl);
		if (rc == 0 || rc == HL_ECONFLICT)
			return print_cond(c, key, rc, if_rev, cur);
		return request_failed(c, rc, timeout);
	}
	/* Deleting a missing key is no error for the library; for a person it
	 * usually is a typo, so say so (and send nothing). */
	struct view v;
	int rc = view_open(&v, c->name);
	if (rc)
		return ctl_fail_segment(c, rc);
	rc = view_get(&v, key, strlen(key), NULL, 0, NULL, NULL);
	view_close(&v);
	if (rc == -ENOENT)
		return ctl_fail(c, CTL_NOTFOUND, rc, "not found: no such key '%s'", key);
	if (rc)
		return ctl_fail(c, CTL_FAILED, rc, "%s", hl_strerror(rc));
	struct hl_client *cl = NULL;
	rc = open_client(c, HL_OPEN_SYNC, timeout, &cl);
	if (rc)
		return rc;
	rc = hl_delete(cl, key, strlen(key));
	hl_close(cl);
	if (rc)
		return request_failed(c, rc, timeout);
	return print_ok(c, key);
}

/* ---- watch ---- */

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static const char *
ev_type(enum hl_event_type t)
{
	switch (t) {
	case HL_EV_PUT: return "put";
	case HL_EV_DELETE: return "delete";
	case HL_EV_LAGGED: return "lagged";
	case HL_EV_RESYNC: return "resync";
	case HL_EV_PROGRESS: return "progress";
	default: return "unknown";
	}
}

/* Write one event: --json an object per line; text "TYPE REVISION PID
 * [VALUE]", after the key when WITH_KEY (watch --prefix: events name many
 * keys). Returns 0, or -errno when writing failed (-EPIPE: the reader went
 * away). */
static int
print_event(const struct ctl *c, const struct hl_event *ev, int with_key)
{
	if (c->json) {
		struct out o;
		out_init(&o, stdout, 1);
		out_obj_begin(&o, NULL);
		out_str(&o, "type", ev_type(ev->type));
		out_u64(&o, "observer", ev->observer);
		out_bytes(&o, "key", ev->key, ev->key_len);
		out_u64(&o, "revision", ev->revision);
		out_i64(&o, "publisher", ev->publisher);
		out_u64(&o, "timestamp_ns", ev->timestamp_ns);
		if (ev->has_new)
			out_bytes(&o, "value", ev->new_value, ev->new_len);
		else
			out_null(&o, "value");
		if (ev->has_old)
			out_bytes(&o, "old_value", ev->old_value, ev->old_len);
		else
			out_null(&o, "old_value");
		out_bytes(&o, "meta", ev->meta, ev->meta_len);
		if (ev->type == HL_EV_LAGGED)
			out_u64(&o, "lagged", ev->lagged);
		out_obj_end(&o);
		return out_finish(&o) ? -(errno ? errno : EIO) : 0;
	}
	if (with_key) {
		out_text_escape(stdout, ev->key, ev->key_len, 0);
		putchar(' ');
	}
	printf("%s %llu %d", ev_type(ev->type), (unsigned long long)ev->revision,
	       (int)ev->publisher);
	if (ev->type == HL_EV_LAGGED) {
		printf(" %llu", (unsigned long long)ev->lagged);
	} else if (ev->has_new && ev->type != HL_EV_DELETE) {
		putchar(' ');
		out_text_escape(stdout, ev->new_value, ev->new_len, 0);
	}
	putchar('\n');
	return fflush(stdout) || ferror(stdout) ? -(errno ? errno : EIO) : 0;
}

/* Whether nobody reads our output any more: the reader of a pipe closed
 * its end (POLLERR) or a socket or terminal hung up. Checked while no
 * event comes, so that "watch KEY | head -1" ends with head, not at the
 * next event's failed write. */
static int
output_gone(void)
{
	struct pollfd p = { .fd = STDOUT_FILENO, .events = 0 };
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP));
}

int
ctl_cmd_watch(struct ctl *c, const struct ctl_args *a)
{
	/* KEY or --prefix PREFIX, exactly one. */
	const int prefix = a->set[WATCH_PREFIX];
	const char *key = prefix ? a->val[WATCH_PREFIX] : a->pos[0];
	uint64_t count = 0;
	int timeout = -1;
	if (prefix == (a->npos == 1))
		return ctl_fail(c, CTL_USAGE, 0, "give a KEY or --prefix PREFIX (one of them)");
	if (ctl_check_key(c, key))
		return CTL_USAGE;
	if (a->set[WATCH_COUNT] && ctl_parse_u64(a->val[WATCH_COUNT], 1, UINT32_MAX, &count))
		return ctl_fail(c, CTL_USAGE, 0,
		                "--count needs a number of events (1 or more), not '%s'",
		                a->val[WATCH_COUNT]);
	if (a->set[WATCH_TIMEOUT] && parse_timeout(c, a->val[WATCH_TIMEOUT], &timeout))
		return CTL_USAGE;
	/* Filters are the worker's (HL_OBSERVE_*): what is filtered out is
	 * never written to this watcher's ring. */
	uint32_t oflags =
	        (a->set[WATCH_NO_OLD] ? HL_OBSERVE_NOOLD : 0) | (prefix ? HL_OBSERVE_PREFIX : 0);
	if (a->set[WATCH_FILTER]) {
		if (strcmp(a->val[WATCH_FILTER], "put") == 0)
			oflags |= HL_OBSERVE_NODELETE;
		else if (strcmp(a->val[WATCH_FILTER], "delete") == 0)
			oflags |= HL_OBSERVE_NOPUT;
		else
			return ctl_fail(c, CTL_USAGE, 0,
			                "--filter takes 'put' or 'delete', not '%s'",
			                a->val[WATCH_FILTER]);
	}
	uint64_t progress_ms = 0;
	if (a->set[WATCH_PROGRESS] &&
	    ctl_parse_u64(a->val[WATCH_PROGRESS], HL_PROGRESS_MS_MIN, UINT32_MAX, &progress_ms))
		return ctl_fail(c, CTL_USAGE, 0,
		                "--progress-ms needs a number of ms (%u or more), not '%s'",
		                HL_PROGRESS_MS_MIN, a->val[WATCH_PROGRESS]);
	uint64_t deadline =
	        timeout < 0 ? UINT64_MAX : hl__now_ns() + (uint64_t)timeout * 1000000ull;

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A closed pipe ends the watch, exit 0 and quietly (as "| head" wants:
	 * the reader had all it asked for), through a failed write (EPIPE)
	 * rather than SIGPIPE, so that the endpoint is given back by
	 * hl_close(). */
	signal(SIGPIPE, SIG_IGN);

	struct hl_client *cl = NULL;
	int rc = open_client(c, 0, timeout < 0 ? DEFAULT_TIMEOUT_MS : timeout, &cl);
	if (rc)
		return rc;
	hl_observer_id id;
	struct hl_observe_opts oo = { .flags = oflags, .progress_ms = (uint32_t)progress_ms };
	rc = hl_observe_with(cl, key, strlen(key), &oo, &id);
	if (rc) {
		hl_close(cl);
		return request_failed(c, rc, timeout < 0 ? DEFAULT_TIMEOUT_MS : timeout);
	}
	uint64_t got = 0;
	int code = CTL_OK;
	while (!count || got < count) {
		uint64_t now = hl__now_ns();
		if (stop_signal || now >= deadline) {
			if (count)
				code = ctl_fail(c, CTL_FAILED, -ETIMEDOUT,
				                "%s after %llu of %llu events",
				                stop_signal ? "stopped by a signal" : "timed out",
				                (unsigned long long)got, (unsigned long long)count);
			break;
		}
		/* Short slices, so that a signal or the deadline is noticed
		 * promptly (hl_next() itself retries an interrupted wait). */
		uint64_t left_ms = (deadline - now) / 1000000ull;
		struct hl_event ev;
		rc = hl_next(cl, &ev, left_ms < 200 ? (int)left_ms + 1 : 200);
		if (rc == -ETIMEDOUT || rc == -EAGAIN || rc == -EINTR) {
			if (output_gone())
				break;
			continue;
		}
		if (rc) {
			code = request_failed(c, rc, 0);
			break;
		}
		errno = 0;
		rc = print_event(c, &ev, prefix);
		if (rc == -EPIPE)
			break;
		if (rc) {
			code = ctl_fail(c, CTL_FAILED, rc, "cannot write: %s", hl_strerror(rc));
			break;
		}
		got++;
	}
	hl_close(cl);
	return code;
}
