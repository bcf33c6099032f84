/* SPDX-License-Identifier: MIT */
/*
 * fuzz_attach.c: attaching to a segment whose bytes anyone with write
 * access to the shm object may have written.
 *
 * Mode HL_FZ_MODE_HEADER (first byte 1): a header (up to its full size) and
 * the object's size go through hl__seg_validate(), the check every mapping
 * makes first. When it accepts, every region the accessors of segment.h
 * compute must lie inside the object: that is the promise the rest of the
 * code builds on, asserted here field by field.
 *
 * Mode HL_FZ_MODE_SEGMENT (first byte 0): a complete small segment (the
 * capacities of fuzz_seg.h, with a header the worker would accept) whose
 * table regions (buckets, key slots, observers, heap, the worker's endpoint
 * records, the claims, the revision counters) are the input, run through
 * the worker's own setup and recovery in-process: hl_w_init() and
 * hl_w_recover() from daemon/worker/worker.c, the very order production
 * runs (part 1, kick, part 2, serve, the at-attach prune) with no thread,
 * then hl_w_check(). Recovery must survive any bytes (cutting what is bad),
 * leave a table the invariant check accepts (bar one documented transient
 * state), and be idempotent: a second pass finds nothing to repair.
 *
 * Claim words are forced to name no process: a live pid would make the
 * endpoint ACTIVE and open pidfds, which is the monitor thread's business,
 * not recovery's, and not reproducible. The worker's stderr log is muted
 * (--wrap=hl__logl) unless HL_FZ_LOG is set.
 */
#include "fuzz_seg.h"
#include "heirloom/heirloom.h"
#include "recovery.h"
#include "worker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
void __wrap_hl__logl(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x))                                                                          \
			abort();                                                                   \
	} while (0)

/* Muted, but HL_FZ_LOG=1 prints it: replaying a finding with the
 * worker's own account of what it repaired says which repair it was. */
void
__wrap_hl__logl(int level, const char *fmt, ...)
{
	static int on = -1;
	if (on < 0)
		on = getenv("HL_FZ_LOG") != NULL;
	if (!on)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[%d] ", level);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- mode HEADER ---- */

static int
within(uint64_t off, uint64_t len, uint64_t lo, uint64_t hi)
{
	return off >= lo && off <= hi && len <= hi - off;
}

static void
fuzz_header(const uint8_t *data, size_t size)
{
	static struct hl_shm_header h;
	uint64_t file_size = 0;
	if (size < 8)
		return;
	memcpy(&file_size, data, 8);
	data += 8;
	size -= 8;
	memset(&h, 0, sizeof(h));
	memcpy(&h, data, size < sizeof(h) ? size : sizeof(h));
	if (hl__seg_validate(&h, file_size) != 0)
		return;
	/* Accepted: every computed region lies inside [0, size) and in order. */
	CHECK(h.size <= file_size && h.size >= sizeof(h));
	CHECK(h.shards >= 1 && h.shards <= HL_SHARDS_MAX);
	CHECK(h.nbuckets && !(h.nbuckets & (h.nbuckets - 1)) && h.nbuckets >= h.max_keys);
	CHECK(h.key_stride >= sizeof(struct hl_shm_key) + HL_KEY_MAX);
	CHECK(h.max_value <= HL_VALUE_MAX_LIMIT);
	CHECK(h.req_ring_bytes && !(h.req_ring_bytes & (h.req_ring_bytes - 1)));
	CHECK(h.ev_ring_bytes && !(h.ev_ring_bytes & (h.ev_ring_bytes - 1)));
	CHECK(h.heap_chunk >= sizeof(struct hl_shm_value) + HL_META_MAX + h.max_value);
	uint64_t ctl = hl__ep_ctl_bytes(h.shards);
	CHECK(h.ep_worker_stride >= ctl + (uint64_t)h.shards * h.ev_ring_bytes);
	CHECK(h.ep_client_stride >= ctl + (uint64_t)h.shards * h.req_ring_bytes);
	CHECK(within(h.buckets_off, (uint64_t)h.nbuckets * sizeof(struct hl_shm_bucket), sizeof(h),
	             h.keys_off));
	CHECK(within(h.keys_off, (uint64_t)h.max_keys * h.key_stride, h.buckets_off,
	             h.observers_off));
	CHECK(within(h.observers_off, (uint64_t)h.max_observers * sizeof(struct hl_shm_observer),
	             h.keys_off, h.heap_off));
	CHECK(within(h.heap_off, h.heap_bytes, h.observers_off, h.ep_worker_off));
	CHECK(within(h.ep_worker_off, (uint64_t)h.max_endpoints * h.ep_worker_stride, h.heap_off,
	             h.claims_off));
	uint64_t claims = (uint64_t)h.max_endpoints * sizeof(struct hl_shm_claim) +
	                  (uint64_t)h.shards * sizeof(struct hl_shm_doorbell) +
	                  (uint64_t)hl__pending_words(&h) * 8u * h.shards;
	CHECK(within(h.claims_off, claims, h.ep_worker_off, h.ep_client_off));
	CHECK(within(h.ep_client_off, (uint64_t)h.max_endpoints * h.ep_client_stride, h.claims_off,
	             h.size));
	/* The client maps [claims_off, ep_client_off) and its block on page
	 * boundaries: both must be page aligned. */
	CHECK(!(h.claims_off % HL_PAGE) && !(h.ep_client_off % HL_PAGE) &&
	      !(h.ep_client_stride % HL_PAGE));
	/* Pending bits cover every endpoint. */
	CHECK((uint64_t)hl__pending_words(&h) * 64u >= h.max_endpoints);
}

/* ---- mode SEGMENT ---- */

static struct hl_worker W;
static struct hl_shm_header hdr; /* the header every input starts from */
static uint8_t *base;

static void
worker_setup(void)
{
	struct hl_layout_params p = hl_fz_params();
	CHECK(hl__layout_compute(&p, &hdr) == 0);
	hdr.magic = HL_MAGIC;
	base = aligned_alloc(HL_PAGE, hdr.size);
	CHECK(base);
	memset(base, 0, hdr.size);
	memcpy(base, &hdr, sizeof(hdr));
	CHECK(hl__seg_validate((struct hl_shm_header *)(void *)base, hdr.size) == 0);
	struct hl_worker *w = &W;
	w->seg = (struct hl_seg){
		.base = base, .size = hdr.size, .fd = -1, .h = (struct hl_shm_header *)(void *)base
	};
	/* The worker's own setup, as main.c runs it (worker.c). */
	CHECK(hl_w_init(w) == 0);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	urcu_memb_register_thread();
	worker_setup();
	return 0;
}

static void
load_segment(const uint8_t *data, size_t size)
{
	memset(base, 0, hdr.size);
	memcpy(base, &hdr, sizeof(hdr));
	struct hl_fz_win win[HL_FZ_MAX_WIN];
	size_t nw = hl_fz_windows(&hdr, win);
	for (size_t i = 0; i < nw && size; i++) {
		size_t n = win[i].len < size ? (size_t)win[i].len : size;
		memcpy(base + win[i].off, data, n);
		data += n;
		size -= n;
	}
	for (uint32_t ep = 0; ep < hdr.max_endpoints; ep++) {
		struct hl_shm_claim *cl = hl__claim(&W.seg, ep);
		uint64_t word = atomic_load_explicit(&cl->word, memory_order_relaxed);
		atomic_store_explicit(&cl->word, HL_CLAIM(0, HL_CLAIM_GEN(word)),
		                      memory_order_relaxed);
	}
}

static void
fuzz_segment(const uint8_t *data, size_t size)
{
	struct hl_worker *w = &W;
	char msg[256];
	load_segment(data, size);
	CHECK(hl_w_recover(w) == 0);
	uint64_t repairs1 = atomic_load(&w->seg.h->last_recovery_repairs);
	int rc = hl_w_check(w, msg, sizeof(msg));
	/* The one state recovery leaves for the shard threads: a key created
	 * by a publish whose value was not committed yet. The request is still
	 * in its ring and its replay gives the key a value. */
	CHECK(rc == 0 || strstr(msg, "neither value nor observer"));
	/* Idempotent: what the first pass left is consistent. */
	CHECK(hl_w_recover(w) == 0);
	uint64_t repairs2 = atomic_load(&w->seg.h->last_recovery_repairs);
	if (repairs2 != 0) {
		fprintf(stderr, "second recovery made %lu repairs (first: %lu)\n",
		        (unsigned long)repairs2, (unsigned long)repairs1);
		abort();
	}
	for (uint32_t ep = 0; ep < hdr.max_endpoints; ep++)
		CHECK(w->eps[ep].pidfd < 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!base)
		LLVMFuzzerInitialize(NULL, NULL);
	if (size < 1)
		return 0;
	if (data[0] == HL_FZ_MODE_HEADER)
		fuzz_header(data + 1, size - 1);
	else if (data[0] == HL_FZ_MODE_SEGMENT)
		fuzz_segment(data + 1, size - 1);
	return 0;
}
