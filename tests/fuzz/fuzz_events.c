/* SPDX-License-Identifier: MIT */
/*
 * fuzz_events.c: the client library's event decoding on arbitrary event
 * rings. A client trusts nothing it maps: the worker's event records, the
 * ring's producer position (ev_head), the lag counters and the observer
 * slots could all have been written by anyone with write access to the shm
 * object. hl_next() must answer HL_ECORRUPT, never crash or hand out a
 * pointer outside the record it copied.
 *
 * The target plays the worker in-process on a real shm segment: a "mini
 * worker" thread answers the client's OBSERVE requests (so that hl_next()
 * knows some observer ids and expands records into events), and the fuzz
 * input becomes the event rings' contents and heads, the lag counters and
 * the observers' drop counts. Each input runs on a fresh client (hl_open,
 * observers, hl_next until nothing is left or an error, hl_close), so that
 * runs are reproducible.
 *
 * Input: [0..7] request ring base position (bit 63 cleared), [8..15] event ring base
 * position, [16] observers to register (mod 4), then chunks:
 *   [ctl][len lo][len hi][len bytes]
 *   ctl bit 0: shard; bit 1: set ev_head to tail + the chunk's first 4 bytes
 *   instead of writing them (an impossible or partial head); bit 2: bump
 *   lag_seq and add ctl >> 4 to the drop count of observer (ctl >> 3) & 3;
 *   bit 3: call hl_next() until it has nothing (else write the next chunk).
 * Oracles: ASan/UBSan, and the API contract: event types, lengths within
 * the segment's limits, every byte of key, meta and values readable, ids
 * of this client's observers, revisions increasing per observer.
 */
#include "heirloom/heirloom.h"
#include "layout.h"
#include "ring.h"
#include "segment.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Where the bytes read are summed, so that reading them is not optimised out. */
extern volatile unsigned hl_fz_sink;
volatile unsigned hl_fz_sink;

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "fuzz_events: check failed: %s\n", #x);                    \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define NKEYS 3
#define EPS   2

static char name[64];
static struct hl_seg S;     /* the "worker's" read-write mapping */
static char keys[NKEYS][8]; /* keys of shard 0, the mini worker's doorbell */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* serving vs resetting */
static uint64_t next_seq = 1;                          /* under mu: observer ids handed out */

static void
cleanup(void)
{
	hl__seg_unlink(name);
}

/* Serve every request queued in endpoint EP's rings: OBSERVE gets a fresh
 * observer id (also written to its observer slot, as the worker does),
 * anything else is consumed. Call with mu held. */
static int
serve_ep(uint32_t ep)
{
	struct hl_shm_claim *cl = hl__claim(&S, ep);
	uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
	if (!HL_CLAIM_PID(word) ||
	    atomic_load_explicit(&cl->ready, memory_order_acquire) != HL_CLAIM_GEN(word))
		return 0;
	int served = 0;
	for (uint32_t s = 0; s < S.h->shards; s++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&S, ep, s);
		struct hl_ring r = { .head = &hl__epc_shard(&S, ep, s)->req_head,
			             .tail = &ws->req_tail,
			             .data = hl__req_ring(&S, ep, s),
			             .size = S.h->req_ring_bytes };
		uint64_t tail = atomic_load_explicit(&ws->req_tail, memory_order_relaxed);
		for (;;) {
			const uint8_t *rec;
			uint32_t len;
			uint64_t at = tail;
			int rc = hl__ring_peek(&r, &at, &rec, &len);
			if (rc <= 0) {
				if (rc == 0 && at != tail)
					hl__ring_consume(&r, tail = at);
				break;
			}
			struct hl_req q;
			memcpy(&q, rec, sizeof(q) < len ? sizeof(q) : len);
			if (len >= sizeof(q) && q.h.type == HL_REQ_OBSERVE) {
				uint32_t slot = (uint32_t)(next_seq % S.h->max_observers) + 1;
				uint64_t id = (next_seq++ << 24) | slot;
				atomic_store_explicit(&hl__obs(&S, slot)->id, id,
				                      memory_order_relaxed);
				atomic_store_explicit(&ws->result, (int64_t)id,
				                      memory_order_relaxed);
				atomic_store_explicit(&ws->result_pos, at + 1,
				                      memory_order_release);
			}
			tail = at + len;
			hl__ring_consume(&r, tail);
			served = 1;
		}
	}
	return served;
}

static void *
mini_worker(void *arg)
{
	(void)arg;
	struct hl_shm_doorbell *db = hl__doorbell(&S, 0);
	for (;;) {
		uint32_t seen = atomic_load_explicit(&db->word, memory_order_acquire);
		pthread_mutex_lock(&mu);
		int served = 0;
		for (uint32_t ep = 0; ep < EPS; ep++)
			served |= serve_ep(ep);
		pthread_mutex_unlock(&mu);
		if (served) {
			for (uint32_t ep = 0; ep < EPS; ep++) {
				_Atomic uint32_t *word = hl__ep_signal(&S, ep);
				atomic_fetch_add_explicit(word, 1, memory_order_release);
				hl__futex_wake(word, 8);
			}
			continue;
		}
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 20 * 1000000L };
		hl__futex_wait(&db->word, seen, &ts);
	}
	return NULL;
}

/* A run that crashed (a finding) left its segment behind: remove those of
 * processes that no longer exist. */
static void
remove_stale(void)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		int pid;
		char n[64];
		if (sscanf(e->d_name, "heirloom.fzev.%d", &pid) == 1 && pid > 0 &&
		    kill(pid, 0) < 0 && errno == ESRCH) {
			snprintf(n, sizeof(n), "fzev.%d", pid);
			hl__seg_unlink(n);
		}
	}
	if (d)
		closedir(d);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	remove_stale();
	snprintf(name, sizeof(name), "fzev.%d", (int)getpid());
	hl__seg_unlink(name);
	struct hl_layout_params p = { .max_keys = 16,
		                      .max_observers = 16,
		                      .max_endpoints = EPS,
		                      .max_value = 64,
		                      .shards = 2,
		                      .req_ring_bytes = 2048,
		                      .ev_ring_bytes = 4096,
		                      .heap_bytes = 8192,
		                      .hist_bytes = 2048 };
	int fd;
	CHECK(hl__seg_create(name, &p, 0600, (gid_t)-1, &fd) == 0);
	atexit(cleanup);
	CHECK(hl__seg_map_rw(fd, &S) == 0);
	/* A worker serves (clients wait for answers rather than give up), and
	 * every shard "sleeps", so that client doorbells wake the futex. */
	atomic_store(&S.h->owner_role, HL_ROLE_WORKER);
	atomic_store(&S.h->worker_ready, 1);
	for (uint32_t s = 0; s < S.h->shards; s++)
		atomic_store(&S.h->shard[s].sleeping, 1);
	for (unsigned i = 0, n = 0; n < NKEYS && i < 100; i++) {
		char k[8];
		snprintf(k, sizeof(k), "k%u", i % 100u);
		uint32_t b = hl__bucket_of(S.h, hl__hash(k, strlen(k)));
		if (hl__shard_of_bucket(S.h, b) == 0)
			memcpy(keys[n++], k, sizeof(k));
	}
	CHECK(keys[NKEYS - 1][0]);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, mini_worker, NULL) == 0);
	pthread_detach(t);
	return 0;
}

static uint64_t
rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* Between inputs: every endpoint free, positions at the input's bases. */
static void
reset(uint64_t req_base, uint64_t ev_base)
{
	pthread_mutex_lock(&mu);
	for (uint32_t ep = 0; ep < EPS; ep++) {
		struct hl_shm_claim *cl = hl__claim(&S, ep);
		uint64_t word = atomic_load(&cl->word);
		atomic_store(&cl->word, HL_CLAIM(0, HL_CLAIM_GEN(word)));
		struct hl_shm_epw *pw = hl__epw(&S, ep);
		atomic_store(&pw->state, HL_EP_FREE);
		for (uint32_t s = 0; s < S.h->shards; s++) {
			struct hl_shm_epw_shard *ws = hl__epw_shard(&S, ep, s);
			atomic_store(&ws->req_tail, req_base + s * 8u);
			atomic_store(&ws->ev_head, ev_base + s * 8u);
			atomic_store(&ws->result_pos, 0);
			atomic_store(&ws->lag_seq, 0);
			atomic_store(&ws->async_errs, 0);
		}
	}
	for (uint32_t i = 1; i <= S.h->max_observers; i++) {
		atomic_store(&hl__obs(&S, i)->id, 0);
		atomic_store(&hl__obs(&S, i)->dropped, 0);
	}
	next_seq = 1;
	pthread_mutex_unlock(&mu);
}

struct seen {
	hl_observer_id id;
	uint64_t rev;
};

static void
check_event(const struct hl_event *ev, struct seen *obs, int nobs)
{
	unsigned sum = 0;
	CHECK(ev->type >= HL_EV_PUT && ev->type <= HL_EV_RESYNC);
	CHECK(ev->key_len >= 1 && ev->key_len <= HL_KEY_MAX && ev->key);
	CHECK(ev->meta_len <= HL_META_MAX && (ev->meta || !ev->meta_len));
	CHECK(!ev->has_old || ev->old_len <= S.h->max_value);
	CHECK(!ev->has_new || ev->new_len <= S.h->max_value);
	for (size_t i = 0; i < ev->key_len; i++)
		sum += ((const uint8_t *)ev->key)[i];
	for (size_t i = 0; i < ev->meta_len; i++)
		sum += ((const uint8_t *)ev->meta)[i];
	for (size_t i = 0; ev->has_old && i < ev->old_len; i++)
		sum += ((const uint8_t *)ev->old_value)[i];
	for (size_t i = 0; ev->has_new && i < ev->new_len; i++)
		sum += ((const uint8_t *)ev->new_value)[i];
	hl_fz_sink += sum;
	int k = -1;
	for (int i = 0; i < nobs; i++)
		if (obs[i].id == ev->observer)
			k = i;
	CHECK(k >= 0);
	if (ev->type == HL_EV_PUT || ev->type == HL_EV_DELETE)
		CHECK(ev->revision > obs[k].rev); /* increasing, no duplicates */
	if (ev->type != HL_EV_LAGGED && ev->revision > obs[k].rev)
		obs[k].rev = ev->revision;
}

/* hl_next() until it has nothing or fails; 0 to go on, -1 after an error. */
static int
drain(struct hl_client *c, struct seen *obs, int nobs)
{
	for (int i = 0; i < 2048; i++) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 0);
		if (rc == -EAGAIN)
			return 0;
		if (rc != 0) {
			CHECK(rc == HL_ECORRUPT);
			return -1;
		}
		check_event(&ev, obs, nobs);
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!S.base)
		LLVMFuzzerInitialize(NULL, NULL);
	if (size < 17)
		return 0;
	/* Request positions stay below 2^63: synchronous calls compare them
	 * as plain integers (wait_consumed()), so a base near 2^64 wraps and
	 * the call times out (-ETIMEDOUT, after the full timeout: too slow
	 * for fuzzing). A worker reaches such positions only after 2^63
	 * bytes of requests, or in a segment someone corrupted. Multiples
	 * of 8, as the worker keeps them: a client passes over an endpoint
	 * whose positions are not (claim_endpoint()). */
	reset(rd64(data) & ~(1ull << 63) & ~7ull, rd64(data + 8) & ~7ull);
	int nobs = data[16] % 4;
	data += 17;
	size -= 17;

	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = 2000 };
	CHECK(hl_open(name, &o, &c) == 0);
	uint32_t ep;
	for (ep = 0; ep < EPS; ep++)
		if (HL_CLAIM_PID(atomic_load(&hl__claim(&S, ep)->word)) == (uint32_t)getpid())
			break;
	CHECK(ep < EPS);
	struct seen obs[NKEYS] = { { 0 } };
	for (int i = 0; i < nobs; i++) {
		/* Impossible positions (the input's bases) make the request
		 * ring unusable: HL_ECORRUPT is the right answer, not a crash. */
		int rc = hl_observe(c, keys[i], strlen(keys[i]), 0, &obs[i].id);
		CHECK(rc == 0 || rc == HL_ECORRUPT);
		if (rc) {
			nobs = i;
			break;
		}
	}

	int dead = 0;
	while (size >= 3 && !dead) {
		uint8_t ctl = data[0];
		size_t len = (size_t)data[1] | (size_t)data[2] << 8;
		data += 3;
		size -= 3;
		if (len > size)
			len = size;
		uint32_t s = ctl & 1u;
		struct hl_shm_epw_shard *ws = hl__epw_shard(&S, ep, s);
		uint8_t *ring = hl__ev_ring(&S, ep, s);
		uint32_t rsize = S.h->ev_ring_bytes;
		uint64_t head = atomic_load_explicit(&ws->ev_head, memory_order_relaxed);
		if (ctl & 2u) {
			uint32_t d = 0;
			memcpy(&d, data, len < 4 ? len : 4);
			uint64_t tail = atomic_load(&hl__epc_shard(&S, ep, s)->ev_tail);
			atomic_store_explicit(&ws->ev_head, tail + d, memory_order_release);
		} else {
			for (size_t i = 0; i < len && i < rsize; i++)
				ring[(head + i) & (rsize - 1)] = data[i];
			atomic_store_explicit(&ws->ev_head, head + len, memory_order_release);
		}
		if ((ctl & 4u) && nobs) {
			int k = (ctl >> 3) & 3;
			if (k < nobs) {
				uint32_t slot = (uint32_t)(obs[k].id & 0xffffffu);
				atomic_fetch_add(&hl__obs(&S, slot)->dropped, ctl >> 4);
			}
			atomic_fetch_add_explicit(&ws->lag_seq, 1, memory_order_release);
		}
		data += len;
		size -= len;
		if (ctl & 8u)
			dead = drain(c, obs, nobs);
	}
	if (!dead)
		(void)drain(c, obs, nobs);
	hl_close(c);
	return 0;
}
