/* SPDX-License-Identifier: MIT */
/*
 * segment.h: creating, validating and mapping a segment. Owns the shm object
 * name, its size and the mappings; knows nothing of keys or rings beyond
 * the offsets in layout.h.
 */
#ifndef HL_SEGMENT_H
#define HL_SEGMENT_H

#include "layout.h"

#include <stddef.h>
#include <sys/types.h>

#define HL_SHM_PREFIX "/heirloom."
#define HL_NAME_MAX   64

/* A mapped segment. base..base+size is mapped; in a client only the
 * claims region and the client's own ep_client block are writable. */
struct hl_seg {
	uint8_t *base;
	uint64_t size;
	int fd;
	struct hl_shm_header *h; /* == base */
};

/* "/heirloom.NAME" into buf; -EINVAL for an empty, over-long or slash-bearing name. */
int hl__seg_path(const char *name, char *buf, size_t len);

/* Create a new segment NAME with params P and file MODE (e.g. 0660) and
 * group GID (-1 = leave). Fails with -EEXIST when one exists, -ENOSPC when
 * /dev/shm cannot hold all of it (every page is allocated at creation:
 * hl__seg_reserve(); on any failure no object is left behind). On success
 * *fd_out is an O_RDWR descriptor of the object, the header is written and
 * the object is complete: a crash during creation leaves either nothing or
 * an object whose magic is 0 (refused by validation as HL_EBADMAGIC), since
 * the magic is stored last. */
int hl__seg_create(const char *name, const struct hl_layout_params *p, mode_t mode, gid_t gid,
                   int *fd_out);

/* Allocate every page of the object behind FD up to SIZE (fallocate), so
 * that no page fault on a mapping of it can fail for lack of memory in
 * /dev/shm, whatever fills it later. Returns 0 or -ENOSPC (/dev/shm has
 * not that much free), -EFBIG, ...; on failure nothing stays allocated
 * beyond what was before. hl__seg_create() calls it; the daemons call it
 * again on a segment they reopen (a segment made before this existed was
 * sparse). */
int hl__seg_reserve(int fd, uint64_t size);

/* The bytes free in /dev/shm for an unprivileged user (statvfs f_bavail),
 * for the messages that say why a segment does not fit. 0 or -errno. */
int hl__shm_free_bytes(uint64_t *out);

/* Open an existing segment's descriptor: -ENOENT, -EACCES, ... */
int hl__seg_open_fd(const char *name, int writable, int *fd_out);

/* For the daemons, when the object already exists: open it read-write like
 * hl__seg_open_fd(), but refuse one owned by another user than us or root
 * (-EPERM). /dev/shm is writable by everyone: another local user could
 * have created the name first, with a mode that lets them read and write
 * every value published into it. */
int hl__seg_open_own(const char *name, int *fd_out);

/* Validate header H (a private copy) against the object's real size FILE_SIZE:
 * magic, version, format word, sizes, capacities and that every region lies
 * inside the object and matches the layout recomputed from the capacities.
 * Returns 0, HL_EBADMAGIC, HL_EVERSION, HL_ETRUNCATED or HL_ECORRUPT. Safe on
 * any bytes: it is the fuzz target for attach. */
int hl__seg_validate(const struct hl_shm_header *h, uint64_t file_size);

/* Map the whole segment read-write (daemons). Validates first. */
int hl__seg_map_rw(int fd, struct hl_seg *s);

/* Map everything read-only (observers of the segment: heirloomctl status,
 * tests). Works on an O_RDONLY descriptor. */
int hl__seg_map_ro(int fd, struct hl_seg *s);

/* Map for a client: everything read-only, then the claims region read-write.
 * hl__seg_map_own_block() makes one ep_client block writable afterwards. */
int hl__seg_map_client(int fd, struct hl_seg *s);
int hl__seg_map_own_block(struct hl_seg *s, uint32_t ep);

void hl__seg_unmap(struct hl_seg *s);

/* Whether the object S maps is still whole and still the one named NAME
 * (issue 21): 0; HL_ETRUNCATED when someone with write access (owner or
 * group) shrank it below the layout's size (an access past the new end
 * is a SIGBUS); -ESTALE when another object now has the name (the old one
 * was removed and a new one made). A name with no object (removed by an
 * operator, 'heirloomctl segment remove --force-live') is 0: those who
 * have it mapped may go on. *SIZE_NOW is the object's size. */
int hl__seg_intact(const struct hl_seg *s, const char *name, uint64_t *size_now);

/* Remove the shm object NAME. */
int hl__seg_unlink(const char *name);

/* ---- region accessors (no checks: callers pass validated indexes) ---- */

static inline struct hl_shm_bucket *
hl__bucket(const struct hl_seg *s, uint32_t b)
{
	return (struct hl_shm_bucket *)(s->base + s->h->buckets_off) + b;
}

/* 1-based key slot index. */
static inline struct hl_shm_key *
hl__key(const struct hl_seg *s, uint32_t idx)
{
	return (struct hl_shm_key *)(s->base + s->h->keys_off +
	                             (uint64_t)(idx - 1) * s->h->key_stride);
}

static inline uint8_t *
hl__key_bytes(struct hl_shm_key *k)
{
	return (uint8_t *)(k + 1);
}

/* 1-based observer slot index. */
static inline struct hl_shm_observer *
hl__obs(const struct hl_seg *s, uint32_t idx)
{
	return (struct hl_shm_observer *)(s->base + s->h->observers_off) + (idx - 1);
}

static inline struct hl_shm_value *
hl__val(const struct hl_seg *s, uint64_t off)
{
	return (struct hl_shm_value *)(s->base + off);
}

static inline struct hl_shm_claim *
hl__claim(const struct hl_seg *s, uint32_t ep)
{
	return (struct hl_shm_claim *)(s->base + s->h->claims_off) + ep;
}

/* After the claims come one doorbell per shard, then per shard a pending
 * bitmap of max_endpoints bits (rounded to 64-bit words, line aligned). */
static inline struct hl_shm_doorbell *
hl__doorbell(const struct hl_seg *s, uint32_t shard)
{
	uint8_t *p = s->base + s->h->claims_off +
	             (uint64_t)s->h->max_endpoints * sizeof(struct hl_shm_claim);
	return (struct hl_shm_doorbell *)p + shard;
}

static inline uint32_t
hl__pending_words(const struct hl_shm_header *h)
{
	return ((h->max_endpoints + 511u) / 512u) * 8u; /* whole lines of words */
}

static inline _Atomic uint64_t *
hl__pending(const struct hl_seg *s, uint32_t shard)
{
	uint8_t *p = (uint8_t *)hl__doorbell(s, s->h->shards);
	return (_Atomic uint64_t *)p + (uint64_t)shard * hl__pending_words(s->h);
}

static inline struct hl_shm_epw *
hl__epw(const struct hl_seg *s, uint32_t ep)
{
	return (struct hl_shm_epw *)(s->base + s->h->ep_worker_off +
	                             (uint64_t)ep * s->h->ep_worker_stride);
}

/* The futex word endpoint EP sleeps on, and its bit there (layout.h,
 * hl_shm_epw.ev_signal): that of the first endpoint of its group of 32. */
#define HL_EP_SIGNAL_GROUP 32u
static inline _Atomic uint32_t *
hl__ep_signal(const struct hl_seg *s, uint32_t ep)
{
	return &hl__epw(s, ep & ~(HL_EP_SIGNAL_GROUP - 1))->ev_signal;
}

static inline uint32_t
hl__ep_signal_bit(uint32_t ep)
{
	return 1u << (ep & (HL_EP_SIGNAL_GROUP - 1));
}

static inline struct hl_shm_epw_shard *
hl__epw_shard(const struct hl_seg *s, uint32_t ep, uint32_t shard)
{
	return (struct hl_shm_epw_shard *)((uint8_t *)hl__epw(s, ep) + HL_CACHELINE) + shard;
}

/* Per-endpoint control area (header + per-shard lines), page rounded. */
static inline uint64_t
hl__ep_ctl_bytes(uint32_t shards)
{
	return ((uint64_t)HL_CACHELINE * (1 + shards) + HL_PAGE - 1) & ~(uint64_t)(HL_PAGE - 1);
}

static inline uint8_t *
hl__ev_ring(const struct hl_seg *s, uint32_t ep, uint32_t shard)
{
	return (uint8_t *)hl__epw(s, ep) + hl__ep_ctl_bytes(s->h->shards) +
	       (uint64_t)shard * s->h->ev_ring_bytes;
}

static inline struct hl_shm_epc *
hl__epc(const struct hl_seg *s, uint32_t ep)
{
	return (struct hl_shm_epc *)(s->base + s->h->ep_client_off +
	                             (uint64_t)ep * s->h->ep_client_stride);
}

static inline struct hl_shm_epc_shard *
hl__epc_shard(const struct hl_seg *s, uint32_t ep, uint32_t shard)
{
	return (struct hl_shm_epc_shard *)((uint8_t *)hl__epc(s, ep) + HL_CACHELINE) + shard;
}

static inline uint8_t *
hl__req_ring(const struct hl_seg *s, uint32_t ep, uint32_t shard)
{
	return (uint8_t *)hl__epc(s, ep) + hl__ep_ctl_bytes(s->h->shards) +
	       (uint64_t)shard * s->h->req_ring_bytes;
}

/* Shard SHARD's history control line and ring (layout.h, "history"). */
static inline struct hl_shm_hist *
hl__hist(const struct hl_seg *s, uint32_t shard)
{
	return (struct hl_shm_hist *)(s->base + s->h->hist_off) + shard;
}

static inline uint8_t *
hl__hist_data(const struct hl_seg *s, uint32_t shard)
{
	return s->base + s->h->hist_off + hl__hist_ctl_bytes(s->h->shards) +
	       (uint64_t)shard * s->h->hist_bytes;
}

/* Bucket and shard of a hash. */
static inline uint32_t
hl__bucket_of(const struct hl_shm_header *h, uint64_t hash)
{
	return (uint32_t)(hash & (h->nbuckets - 1));
}

static inline uint32_t
hl__shard_of_bucket(const struct hl_shm_header *h, uint32_t bucket)
{
	return bucket % h->shards;
}

/* Size class helpers of the heap allocator (alloc.c) that clients need to
 * bound a value block: class k holds blocks of 64 << k bytes. */
static inline uint64_t
hl__class_size(uint32_t k)
{
	return 64ull << k;
}

#endif /* HL_SEGMENT_H */
