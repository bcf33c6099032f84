/* SPDX-License-Identifier: MIT */
/*
 * view.c: read-only snapshots of a segment for heirloomctl (see view.h).
 * It must never write to the segment (the mapping is PROT_READ: a stray
 * write faults here rather than corrupting the table) and must never trust
 * an index, offset or length it reads without checking it against the
 * validated header.
 *
 * view_keys(), view_get() and view_inspect() give the answers of hl_keys(),
 * hl_get() and hl_inspect_key(); they are here rather than called through a
 * struct hl_client because hl_open() claims an endpoint (and needs write
 * access), which a read-only command must not do. They use the library's
 * own readers (table_read.h) for everything that is not a plain walk.
 */
#include "view.h"

#include "owner.h"
#include "table_read.h"
#include "trust.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LD(p) atomic_load_explicit((p), memory_order_relaxed)

int
view_open(struct view *v, const char *name)
{
	/* The same rule as hl_open(): a squatter's segment is not read
	 * either, or `heirloomctl get` would print its forged values. main()
	 * already refused an unusable $HEIRLOOM_OWNER. */
	struct hl_trust t;
	if (hl__trust_init(&t, NULL, NULL, 0))
		return -EINVAL;
	int fd, rc = hl__seg_open_fd(name, 0, &fd);
	if (rc)
		return rc;
	struct stat st;
	rc = hl__trust_fd(&t, fd, &st);
	if (rc) {
		close(fd);
		return rc;
	}
	rc = hl__seg_map_ro(fd, &v->seg);
	if (rc) {
		close(fd);
		return rc;
	}
	v->file_size = (uint64_t)st.st_size;
	return 0;
}

int
view_untrusted(const char *name, char *why, size_t len, char *owner, size_t olen)
{
	struct hl_trust t;
	struct stat st;
	int fd, rc = hl__trust_init(&t, NULL, NULL, 0);
	if (rc == 0)
		rc = hl__seg_open_fd(name, 0, &fd);
	if (rc)
		return rc;
	rc = fstat(fd, &st) < 0 ? -errno : 0;
	close(fd);
	if (rc)
		return rc;
	hl__trust_explain(&t, &st, why, len);
	hl__trust_user_name(st.st_uid, owner, olen);
	return hl__trust_owner(&t, st.st_uid, st.st_gid, st.st_mode);
}

/* Whether the caller is in group GID (effective or supplementary). */
static int
in_group(gid_t gid)
{
	if (getegid() == gid)
		return 1;
	gid_t groups[256];
	int n = getgroups(256, groups);
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return 1;
	return 0;
}

void
view_denied(const char *name, char *buf, size_t len)
{
	char path[HL_NAME_MAX + 32], owner[64], group[64], me[64];
	struct stat st;
	snprintf(path, sizeof(path), "/dev/shm/heirloom.%s", name);
	if (stat(path, &st) < 0) {
		snprintf(buf, len, "permission denied: %s: %s", path, strerror(errno));
		return;
	}
	hl__trust_user_name(st.st_uid, owner, sizeof(owner));
	hl__trust_group_name(st.st_gid, group, sizeof(group));
	hl__trust_user_name(geteuid(), me, sizeof(me));
	unsigned mode = (unsigned)st.st_mode & 07777;
	/* Read allowed means that the refused open was the read-write one of
	 * a command that takes an endpoint (set, del, watch). */
	int can_read = faccessat(AT_FDCWD, path, R_OK, AT_EACCESS) == 0;
	const char *need = can_read ? "read and write access (set, del and watch take an endpoint)"
	                            : "read access";
	int n = snprintf(buf, len,
	                 "permission denied: %s (mode %04o, owner %s, group %s) needs %s; ", path,
	                 mode, owner, group, need);
	if (n < 0 || (size_t)n >= len)
		return;
	buf += n, len -= (size_t)n;
	if (geteuid() == st.st_uid)
		snprintf(buf, len,
		         "you (%s) own it but its mode does not allow that: its creator's --mode "
		         "sets it",
		         me);
	else if (in_group(st.st_gid))
		snprintf(
		        buf, len,
		        "you (%s) are in its group %s, and mode %04o does not give the group that: "
		        "the keeper's --mode (default 0660: group read and write) sets it when it "
		        "creates the segment",
		        me, group, mode);
	else
		snprintf(buf, len,
		         "you (%s) are neither its owner nor in its group %s: join group %s (then "
		         "log in again), or have the keeper create the segment with --group GROUP, "
		         "a group of yours (its --mode, default 0660, gives that group read and "
		         "write)",
		         me, group, group);
}

void
view_close(struct view *v)
{
	int fd = v->seg.fd;
	hl__seg_unmap(&v->seg);
	if (fd >= 0)
		close(fd);
}

int
view_pid_alive(uint32_t pid, uint64_t start)
{
	if (pid == 0 || pid > INT32_MAX)
		return 0;
	if (start)
		return hl__proc_alive((int)pid, start);
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

void
view_owner(const struct view *v, struct view_owner *o)
{
	struct hl_shm_header *h = v->seg.h;
	struct hl_owner r;
	memset(o, 0, sizeof(*o));
	/* Under owner_seq (lib/owner.c); a torn record is shown as it is. */
	o->torn = hl__owner_read(h, &r) != 0;
	o->role = r.role;
	o->pid = r.pid;
	o->start = r.start;
	o->epoch = r.epoch;
	o->alive = o->role != HL_ROLE_NONE && view_pid_alive(o->pid, o->start);
	o->keeper_pid = LD(&h->keeper_pid);
	o->keeper_start = LD(&h->keeper_start);
	o->keeper_alive = view_pid_alive(o->keeper_pid, o->keeper_start);
}

/* hl_stats() without a client: the library's own reader of the counters
 * (hl__stats_from_header(), table_read.h). */
void
view_stats(const struct view *v, struct view_stats *s)
{
	const struct hl_shm_header *h = v->seg.h;
	memset(s, 0, sizeof(*s));
	hl__stats_from_header(h, &s->st);
	s->recoveries = LD(&h->recoveries);
	s->last_recovery_repairs = LD(&h->last_recovery_repairs);
	for (uint32_t i = 0; i < h->shards && i < HL_SHARDS_MAX; i++) {
		s->async_errors += LD(&h->shard[i].c.async_errors);
		s->dispatch_sum_ns += LD(&h->shard[i].c.dispatch_ns_sum);
	}
	s->worker_ready = (int)LD(&h->worker_ready);
}

void
view_liveness(const struct view *v, struct view_live *l)
{
	const struct hl_shm_header *h = v->seg.h;
	uint64_t now = hl__coarse_ns();
	memset(l, 0, sizeof(*l));
	l->timeout_ms = LD(&h->hang_timeout_ms);
	l->n = 1 + (h->shards < HL_SHARDS_MAX ? h->shards : HL_SHARDS_MAX);
	for (unsigned i = 0; i < l->n; i++) {
		struct view_thread *t = &l->t[i];
		uint64_t b = i == 0 ? LD(&h->monitor_beat_ns) : LD(&h->shard[i - 1].beat_ns);
		uint64_t p = LD(&h->progress_ns[i]);
		if (i == 0)
			snprintf(t->name, sizeof(t->name), "monitor");
		else
			snprintf(t->name, sizeof(t->name), "shard%u", i - 1);
		if (b == HL_BEAT_STOPPED) {
			t->stopped = 1;
			continue;
		}
		/* The keeper's progress counts only once it is past this
		 * worker's first beat (it may describe the previous worker). */
		uint64_t last = p > b ? p : b;
		t->age_ns = now > last ? now - last : 0;
		t->hung = l->timeout_ms && t->age_ns > l->timeout_ms * 1000000ull;
		l->hung |= t->hung;
		if (t->age_ns > l->max_age_ns)
			l->max_age_ns = t->age_ns;
	}
}

const char *
view_worker_state(const struct view_owner *o, const struct view_stats *s, const struct view_live *l)
{
	if (o->role != HL_ROLE_WORKER)
		return "none";
	if (!o->alive)
		return "exited";
	if (l->hung)
		return "hung";
	return s->worker_ready ? "ready" : "starting";
}

unsigned
view_log(const struct view *v, struct hl_shm_logrec *out, unsigned cap)
{
	struct hl_shm_header *h = v->seg.h;
	uint64_t head = atomic_load_explicit(&h->log_head, memory_order_acquire);
	uint64_t n = head < HL_ERRLOG_LEN ? head : HL_ERRLOG_LEN;
	if (n > cap)
		n = cap;
	unsigned got = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct hl_shm_logrec *r = &h->log[(head - n + i) % HL_ERRLOG_LEN];
		/* kind is stored last by the writer (lib/seglog.c): 0 means the
		 * record is being written (or its writer died): skip it. A
		 * record overwritten while we copy is only a diagnostic glitch;
		 * its text is terminated below. */
		if (__atomic_load_n(&r->kind, __ATOMIC_ACQUIRE) == 0)
			continue;
		hl__racy_copy_out(&out[got], r, sizeof(out[got]));
		out[got].text[sizeof(out[got].text) - 1] = '\0';
		got++;
	}
	return got;
}

const char *
view_role_name(uint32_t role)
{
	switch (role) {
	case HL_ROLE_NONE: return "none";
	case HL_ROLE_KEEPER: return "keeper";
	case HL_ROLE_WORKER: return "worker";
	default: return "unknown";
	}
}

const char *
view_log_kind(uint32_t kind)
{
	switch (kind) {
	case HL_LOG_WORKER_EXIT: return "worker_exit";
	case HL_LOG_HANDBACK: return "handback";
	case HL_LOG_HANDOFF: return "handoff";
	case HL_LOG_RECOVERY: return "recovery";
	case HL_LOG_BAD_CLIENT: return "bad_client";
	case HL_LOG_KEEPER_START: return "keeper_start";
	case HL_LOG_UPGRADE: return "upgrade";
	case HL_LOG_SLOW_READER: return "slow_reader";
	case HL_LOG_HUNG: return "hung";
	default: return "unknown";
	}
}

const char *
view_ep_state(uint32_t state)
{
	switch (state) {
	case HL_EP_FREE: return "free";
	case HL_EP_ACTIVE: return "active";
	case HL_EP_DEAD: return "dead";
	case HL_EP_BANNED: return "banned";
	default: return "unknown";
	}
}

/* ---- keys and values (the answers of hl_keys, hl_get, hl_inspect_key) ---- */

/* hl_keys()'s walk; view_key_cb takes the key as bytes, the walk as void. */
struct keys_adapt {
	view_key_cb cb;
	void *arg;
};

static int
keys_adapt_cb(const void *key, size_t len, uint64_t rev, void *arg)
{
	struct keys_adapt *a = arg;
	return a->cb(key, (uint32_t)len, rev, a->arg);
}

int
view_keys(const struct view *v, view_key_cb cb, void *arg)
{
	struct keys_adapt a = { .cb = cb, .arg = arg };
	return hl__keys_walk(&v->seg, keys_adapt_cb, &a);
}

static int
lookup(const struct view *v, const void *key, size_t key_len, uint32_t *idx)
{
	if (!key || key_len == 0 || key_len > HL_KEY_MAX)
		return -EINVAL;
	return hl__key_lookup(&v->seg, key, key_len, hl__hash(key, key_len), idx);
}

int
view_get(const struct view *v, const void *key, size_t key_len, void *buf, size_t cap, size_t *len,
         uint64_t *rev)
{
	uint32_t idx;
	int rc = lookup(v, key, key_len, &idx);
	if (rc)
		return rc;
	return hl__value_read(&v->seg, idx, buf, cap, len, rev);
}

int
view_inspect(const struct view *v, const void *key, size_t key_len, struct hl_observer_info *out,
             size_t cap)
{
	uint32_t idx;
	int rc = lookup(v, key, key_len, &idx);
	if (rc)
		return rc;
	return hl__observers_read(&v->seg, idx, out, cap, view_pid_alive);
}

/* ---- endpoints and observers ---- */

/* Bytes between a producer and a consumer position, or UINT64_MAX when the
 * pair is impossible (one side is client-writable and may hold anything). */
static uint64_t
depth(uint64_t head, uint64_t tail, uint64_t size)
{
	return head - tail <= size ? head - tail : UINT64_MAX;
}

int
view_endpoint(const struct view *v, uint32_t ep, struct view_ep *e)
{
	const struct hl_shm_header *h = v->seg.h;
	memset(e, 0, sizeof(*e));
	e->idx = ep;
	if (ep >= h->max_endpoints)
		return 0;
	struct hl_shm_claim *cl = hl__claim(&v->seg, ep);
	struct hl_shm_epw *w = hl__epw(&v->seg, ep);
	uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
	e->claim_pid = HL_CLAIM_PID(word);
	e->claim_gen = HL_CLAIM_GEN(word);
	e->state = atomic_load_explicit(&w->state, memory_order_acquire);
	e->gen = LD(&w->gen);
	e->pid = LD(&w->pid);
	e->start = LD(&w->start_time);
	e->attached_ns = LD(&w->attached_ns);
	e->nobs = LD(&w->nobs);
	if (e->state == HL_EP_FREE) {
		/* Claimed but not adopted yet (or no worker runs): what the
		 * client wrote is all there is. */
		e->pid = e->claim_pid;
		e->start = LD(&cl->start_time);
	}
	e->alive = view_pid_alive(e->pid, e->start);
	for (uint32_t s = 0; s < h->shards && s < HL_SHARDS_MAX; s++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&v->seg, ep, s);
		struct hl_shm_epc_shard *cs = hl__epc_shard(&v->seg, ep, s);
		e->req_depth[s] = depth(LD(&cs->req_head), LD(&ws->req_tail), h->req_ring_bytes);
		e->ev_depth[s] = depth(LD(&ws->ev_head), LD(&cs->ev_tail), h->ev_ring_bytes);
	}
	return e->claim_pid != 0 || e->state != HL_EP_FREE;
}

int
view_observers(const struct view *v, int (*cb)(const struct view_obs *, void *), void *arg)
{
	const struct hl_shm_header *h = v->seg.h;
	/* Liveness per endpoint, looked up once: -1 unknown. */
	signed char *alive = malloc(h->max_endpoints);
	if (!alive)
		return -ENOMEM;
	memset(alive, -1, h->max_endpoints);
	int r = 0;
	for (uint32_t i = 1; i <= h->max_observers && !r; i++) {
		struct hl_shm_observer *o = hl__obs(&v->seg, i);
		struct view_obs ob;
		ob.id = atomic_load_explicit(&o->id, memory_order_acquire);
		if (!ob.id)
			continue;
		ob.slot = i;
		ob.endpoint = __atomic_load_n(&o->endpoint, __ATOMIC_RELAXED);
		ob.ep_gen = __atomic_load_n(&o->ep_gen, __ATOMIC_RELAXED);
		ob.delivered_rev = LD(&o->delivered_rev);
		ob.dropped = LD(&o->dropped);
		ob.created_ns = __atomic_load_n(&o->created_ns, __ATOMIC_RELAXED);
		ob.flags = __atomic_load_n(&o->flags, __ATOMIC_RELAXED);
		ob.pid = 0;
		ob.alive = 0;
		if (ob.endpoint < h->max_endpoints) {
			struct hl_shm_epw *w = hl__epw(&v->seg, ob.endpoint);
			ob.pid = LD(&w->pid);
			if (alive[ob.endpoint] < 0)
				alive[ob.endpoint] =
				        (signed char)view_pid_alive(ob.pid, LD(&w->start_time));
			ob.alive = alive[ob.endpoint] > 0;
		}
		ob.key_len = 0;
		uint32_t k = __atomic_load_n(&o->key, __ATOMIC_RELAXED);
		if (k >= 1 && k <= h->max_keys) {
			struct hl_shm_key *ks = hl__key(&v->seg, k);
			uint32_t kl = __atomic_load_n(&ks->key_len, __ATOMIC_RELAXED);
			if (kl >= 1 && kl <= HL_KEY_MAX) {
				hl__racy_copy_out(ob.key, hl__key_bytes(ks), kl);
				ob.key_len = kl;
			}
		}
		r = cb(&ob, arg);
	}
	free(alive);
	return r;
}

const char *
view_dur_mode_name(uint32_t mode)
{
	switch (mode) {
	case HL_DUR_NONE: return "none";
	case HL_DUR_SNAPSHOT: return "snapshot";
	case HL_DUR_LOG: return "log";
	default: return "unknown";
	}
}

const char *
view_dur_state_name(uint32_t st)
{
	switch (st) {
	case HL_DUR_ST_OFF: return "off";
	case HL_DUR_ST_STARTING: return "starting";
	case HL_DUR_ST_OK: return "durable";
	case HL_DUR_ST_FAILED: return "failed";
	case HL_DUR_ST_STOPPED: return "stopped";
	default: return "unknown";
	}
}

int
view_durable(const struct hl_shm_header *h, int keeper_alive)
{
	return atomic_load_explicit(&h->dur_mode, memory_order_relaxed) != HL_DUR_NONE &&
	       atomic_load_explicit(&h->dur_state, memory_order_acquire) == HL_DUR_ST_OK &&
	       keeper_alive;
}
