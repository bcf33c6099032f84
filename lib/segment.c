/* SPDX-License-Identifier: MIT */
/*
 * segment.c: the life of the shm object itself: its name, creation with a
 * complete header, validation of a header read from an untrusted object, and
 * the mappings (read-write for the daemons, mostly read-only for clients).
 * It must never interpret keys, observers or rings.
 */
#include "segment.h"

#include "heirloom/heirloom.h"
#include "util.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static uint64_t
round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static int
is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static uint64_t
next_pow2(uint64_t v)
{
	uint64_t p = 1;
	while (p < v)
		p <<= 1;
	return p;
}

/* Largest records the rings must hold (a ring holds at least two). */
static uint64_t
max_req_bytes(uint32_t max_value)
{
	return hl__rec_align((uint32_t)sizeof(struct hl_req) + HL_KEY_MAX + HL_META_MAX +
	                     max_value);
}

static uint64_t
max_ev_bytes(uint32_t max_value)
{
	return hl__rec_align((uint32_t)sizeof(struct hl_evrec) + 8u + HL_KEY_MAX + HL_META_MAX +
	                     2u * max_value);
}

/* Largest history record: a history ring holds at least two. */
static uint64_t
max_hist_bytes(uint32_t max_value)
{
	return hl__hist_rec_bytes(HL_KEY_MAX, HL_META_MAX, max_value);
}

static uint32_t
heap_chunk_for(uint32_t max_value)
{
	return (uint32_t)next_pow2(sizeof(struct hl_shm_value) + HL_META_MAX + max_value);
}

static int
check_params(const struct hl_layout_params *p)
{
	if (p->max_keys < 1 || p->max_keys > (1u << 24))
		return -EINVAL;
	if (p->max_observers < 1 || p->max_observers > (1u << 24))
		return -EINVAL;
	if (p->max_endpoints < 1 || p->max_endpoints > 65536)
		return -EINVAL;
	if (p->max_value > HL_VALUE_MAX_LIMIT)
		return -EINVAL;
	if (p->shards < 1 || p->shards > HL_SHARDS_MAX)
		return -EINVAL;
	if (!is_pow2(p->req_ring_bytes) || p->req_ring_bytes < 2 * max_req_bytes(p->max_value) ||
	    p->req_ring_bytes > (1u << 30))
		return -EINVAL;
	if (!is_pow2(p->ev_ring_bytes) || p->ev_ring_bytes < 2 * max_ev_bytes(p->max_value) ||
	    p->ev_ring_bytes > (1u << 30))
		return -EINVAL;
	if (p->heap_bytes < heap_chunk_for(p->max_value) || p->heap_bytes > (1ull << 40))
		return -EINVAL;
	if (!is_pow2(p->hist_bytes) || p->hist_bytes < 2 * max_hist_bytes(p->max_value) ||
	    p->hist_bytes > (1u << 30))
		return -EINVAL;
	/* An endpoint's control area and rings must fit the 32-bit strides of
	 * the header (ep_worker_stride, ep_client_stride): a wrapped stride
	 * would put the rings of later shards outside the segment. */
	uint64_t ctl = hl__ep_ctl_bytes(p->shards);
	if (ctl + (uint64_t)p->shards * p->ev_ring_bytes > UINT32_MAX ||
	    ctl + (uint64_t)p->shards * p->req_ring_bytes > UINT32_MAX)
		return -EINVAL;
	return 0;
}

int
hl__layout_defaults(struct hl_layout_params *p)
{
	if (!p->max_keys)
		p->max_keys = HL_DEF_KEYS;
	if (!p->max_observers)
		p->max_observers = HL_DEF_OBSERVERS;
	if (!p->max_endpoints)
		p->max_endpoints = HL_DEF_ENDPOINTS;
	if (!p->max_value)
		p->max_value = HL_DEF_VALUE;
	if (!p->shards) {
		/* Every shard adds a pair of rings to every endpoint: the default
		 * stops at HL_DEF_SHARDS_MAX so that the default segment's size
		 * does not grow with the machine (--shards asks for more). */
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		p->shards = n < 1                         ? 1
		            : n > (long)HL_DEF_SHARDS_MAX ? HL_DEF_SHARDS_MAX
		                                          : (uint32_t)n;
	}
	if (!p->req_ring_bytes) {
		p->req_ring_bytes = HL_DEF_REQ_RING;
		while (p->req_ring_bytes < 2 * max_req_bytes(p->max_value))
			p->req_ring_bytes <<= 1;
	}
	if (!p->ev_ring_bytes) {
		p->ev_ring_bytes = HL_DEF_EV_RING;
		while (p->ev_ring_bytes < 2 * max_ev_bytes(p->max_value))
			p->ev_ring_bytes <<= 1;
	}
	if (!p->heap_bytes)
		p->heap_bytes = (uint64_t)p->max_keys * HL_DEF_HEAP_PER_KEY;
	if (!p->hist_bytes) {
		p->hist_bytes = HL_DEF_HISTORY;
		while (p->hist_bytes < 2 * max_hist_bytes(p->max_value))
			p->hist_bytes <<= 1;
	}
	return check_params(p);
}

int
hl__layout_compute(const struct hl_layout_params *p, struct hl_shm_header *h)
{
	int rc = check_params(p);
	if (rc)
		return rc;
	memset(h, 0, sizeof(*h));
	h->version = HL_LAYOUT_VERSION;
	h->header_size = sizeof(*h);
	h->format = hl__layout_format();
	h->max_keys = p->max_keys;
	h->max_observers = p->max_observers;
	h->max_endpoints = p->max_endpoints;
	h->max_value = p->max_value;
	h->shards = p->shards;
	h->nbuckets = (uint32_t)next_pow2(p->max_keys);
	h->key_stride = (uint32_t)round_up(sizeof(struct hl_shm_key) + HL_KEY_MAX, HL_CACHELINE);
	h->req_ring_bytes = p->req_ring_bytes;
	h->ev_ring_bytes = p->ev_ring_bytes;
	h->heap_chunk = heap_chunk_for(p->max_value);
	h->heap_bytes = round_up(p->heap_bytes, h->heap_chunk);

	uint64_t ctl = hl__ep_ctl_bytes(p->shards);
	h->ep_worker_stride = (uint32_t)(ctl + (uint64_t)p->shards * p->ev_ring_bytes);
	h->ep_client_stride = (uint32_t)(ctl + (uint64_t)p->shards * p->req_ring_bytes);

	uint64_t off = round_up(sizeof(*h), HL_PAGE);
	h->buckets_off = off;
	off = round_up(off + (uint64_t)h->nbuckets * sizeof(struct hl_shm_bucket), HL_PAGE);
	h->keys_off = off;
	off = round_up(off + (uint64_t)h->max_keys * h->key_stride, HL_PAGE);
	h->observers_off = off;
	off = round_up(off + (uint64_t)h->max_observers * sizeof(struct hl_shm_observer), HL_PAGE);
	/* The heap starts on a chunk boundary relative to itself; offset 0 is
	 * the header, so no value block ever has offset 0 ("none"). */
	h->heap_off = off;
	off = round_up(off + h->heap_bytes, HL_PAGE);
	h->hist_off = off;
	h->hist_bytes = p->hist_bytes;
	off = round_up(off + hl__hist_ctl_bytes(p->shards) + (uint64_t)p->shards * p->hist_bytes,
	               HL_PAGE);
	h->ep_worker_off = off;
	off = round_up(off + (uint64_t)h->max_endpoints * h->ep_worker_stride, HL_PAGE);
	h->claims_off = off;
	uint64_t pend = (uint64_t)hl__pending_words(h) * 8u * p->shards;
	off = round_up(off + (uint64_t)h->max_endpoints * sizeof(struct hl_shm_claim) +
	                       (uint64_t)p->shards * sizeof(struct hl_shm_doorbell) + pend,
	               HL_PAGE);
	h->ep_client_off = off;
	off = round_up(off + (uint64_t)h->max_endpoints * h->ep_client_stride, HL_PAGE);
	h->size = off;
	return 0;
}

void
hl__layout_sizes(const struct hl_shm_header *h, struct hl_layout_sizes *z)
{
	z->header = h->buckets_off;
	z->keys = h->observers_off - h->buckets_off;
	z->observers = h->heap_off - h->observers_off;
	z->heap = h->hist_off - h->heap_off;
	z->history = h->ep_worker_off - h->hist_off;
	z->endpoints = h->size - h->ep_worker_off;
	z->per_endpoint = h->max_endpoints ? z->endpoints / h->max_endpoints : 0;
	z->total = h->size;
}

uint64_t
hl__layout_format(void)
{
	/* Every size and offset the format relies on, folded into one word: a
	 * build whose structs differ refuses the segment instead of misreading. */
	static const uint64_t parts[] = {
		sizeof(struct hl_shm_header),
		sizeof(struct hl_shm_key),
		sizeof(struct hl_shm_value),
		sizeof(struct hl_shm_observer),
		sizeof(struct hl_shm_claim),
		sizeof(struct hl_shm_epw),
		sizeof(struct hl_shm_epw_shard),
		sizeof(struct hl_shm_epc),
		sizeof(struct hl_shm_epc_shard),
		sizeof(struct hl_req),
		sizeof(struct hl_evrec),
		sizeof(struct hl_shm_hist),
		sizeof(struct hl_hist_rec),
		offsetof(struct hl_shm_header, hist_off),
		offsetof(struct hl_shm_epw_shard, result_rev),
		offsetof(struct hl_shm_header, owner_seq),
		offsetof(struct hl_shm_header, worker_ready),
		offsetof(struct hl_shm_header, handoffs),
		offsetof(struct hl_shm_header, revision),
		offsetof(struct hl_shm_header, reattaches),
		offsetof(struct hl_shm_header, hang_timeout_ms),
		offsetof(struct hl_shm_header, log),
		offsetof(struct hl_shm_header, shard),
		HL_KEY_MAX,
		HL_META_MAX,
	};
	uint64_t f = 0;
	for (size_t i = 0; i < HL_ARRAY_SIZE(parts); i++)
		f = hl__mix(f ^ parts[i], 0x9e3779b97f4a7c15ull);
	return f;
}

int
hl__seg_path(const char *name, char *buf, size_t len)
{
	if (!name)
		name = "default";
	size_t n = strlen(name);
	if (n == 0 || n > HL_NAME_MAX || strchr(name, '/'))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
			return -EINVAL;
	int w = snprintf(buf, len, "%s%s", HL_SHM_PREFIX, name);
	return (w < 0 || (size_t)w >= len) ? -EINVAL : 0;
}

int
hl__seg_validate(const struct hl_shm_header *h, uint64_t file_size)
{
	if (file_size < sizeof(h->magic) || h->magic != HL_MAGIC)
		return HL_EBADMAGIC;
	if (file_size < offsetof(struct hl_shm_header, format) + sizeof(h->format))
		return HL_ETRUNCATED;
	if (h->version != HL_LAYOUT_VERSION || h->header_size != sizeof(*h) ||
	    h->format != hl__layout_format())
		return HL_EVERSION;
	if (file_size < sizeof(*h) || h->size > file_size)
		return HL_ETRUNCATED;

	struct hl_layout_params p = {
		.max_keys = h->max_keys,
		.max_observers = h->max_observers,
		.max_endpoints = h->max_endpoints,
		.max_value = h->max_value,
		.shards = h->shards,
		.req_ring_bytes = h->req_ring_bytes,
		.ev_ring_bytes = h->ev_ring_bytes,
		.heap_bytes = h->heap_bytes,
		.hist_bytes = h->hist_bytes,
	};
	struct hl_shm_header want;
	if (hl__layout_compute(&p, &want))
		return HL_ECORRUPT;
	if (want.nbuckets != h->nbuckets || want.key_stride != h->key_stride ||
	    want.heap_chunk != h->heap_chunk || want.heap_bytes != h->heap_bytes ||
	    want.ep_worker_stride != h->ep_worker_stride ||
	    want.ep_client_stride != h->ep_client_stride || want.buckets_off != h->buckets_off ||
	    want.keys_off != h->keys_off || want.observers_off != h->observers_off ||
	    want.heap_off != h->heap_off || want.hist_off != h->hist_off ||
	    want.ep_worker_off != h->ep_worker_off || want.claims_off != h->claims_off ||
	    want.ep_client_off != h->ep_client_off || want.size != h->size)
		return HL_ECORRUPT;
	return 0;
}

int
hl__seg_create(const char *name, const struct hl_layout_params *p, mode_t mode, gid_t gid,
               int *fd_out)
{
	char path[HL_NAME_MAX + 16];
	struct hl_shm_header hdr;
	int rc = hl__seg_path(name, path, sizeof(path));
	if (rc)
		return rc;
	rc = hl__layout_compute(p, &hdr);
	if (rc)
		return rc;

	int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0777);
	if (fd < 0)
		return -errno;
	/* shm_open applies the umask; the operator's mode is the contract. */
	if (fchmod(fd, mode & 0777) < 0 || (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0) ||
	    ftruncate(fd, (off_t)hdr.size) < 0) {
		rc = -errno;
		goto out_unlink;
	}
	/* Every page now, or no segment: see hl__seg_reserve(). */
	rc = hl__seg_reserve(fd, hdr.size);
	if (rc)
		goto out_unlink;
	struct hl_shm_header *h =
	        mmap(NULL, sizeof(hdr), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) {
		rc = -errno;
		goto out_unlink;
	}
	/* The object is fresh from ftruncate, so every region is zero: free
	 * buckets, free slots, free endpoints. Only the header needs writing. */
	memcpy(h, &hdr, sizeof(hdr));
	h->created_ns = hl__wall_ns();
	atomic_store_explicit(&h->next_observer_seq, 1, memory_order_relaxed);
	atomic_store_explicit(&h->owner_epoch, 0, memory_order_relaxed);
	/* Magic last: a crash before this line leaves an object validation
	 * refuses (HL_EBADMAGIC), never a half-initialised one it accepts.
	 * Pairs with the reader's load in hl__seg_map_*() via msync-free
	 * shared-page coherence plus this release. */
	atomic_thread_fence(memory_order_release);
	h->magic = HL_MAGIC;
	munmap(h, sizeof(hdr));
	*fd_out = fd;
	return 0;

out_unlink:
	shm_unlink(path);
	close(fd);
	return rc;
}

int
hl__seg_reserve(int fd, uint64_t size)
{
	/* tmpfs allocates a page at its first touch, and a touch that finds
	 * /dev/shm full is a SIGBUS in whichever process made it, often a
	 * client's application. fallocate() allocates every page now (tmpfs
	 * marks them allocated but not yet written), so that no
	 * later fault in any process can fail; on failure tmpfs gives back
	 * what this call took. Measured on a 16 MiB tmpfs (kernel 6.18):
	 * ftruncate to 8 MiB left 16 MiB free, fallocate of those 8 MiB left
	 * 8 MiB free, and a fallocate of 32 MiB failed with ENOSPC and left
	 * all 16 MiB free. Over pages already allocated it changes nothing,
	 * so it also reserves the holes of a segment made before it. */
	/* Already whole (every segment this build made is): nothing to do.
	 * Asking anyway costs a page-cache lookup per page, 20-40 ms for the
	 * bench's 852 MB segment at every standalone worker's start. tmpfs
	 * counts fallocate()d pages in st_blocks. */
	struct stat st;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_blocks * 512u >= size)
		return 0;
	int rc = posix_fallocate(fd, 0, (off_t)size);
	return rc ? -rc : 0;
}

int
hl__shm_free_bytes(uint64_t *out)
{
	struct statvfs v;
	if (statvfs("/dev/shm", &v) < 0)
		return -errno;
	*out = (uint64_t)v.f_bavail * v.f_frsize;
	return 0;
}

int
hl__seg_open_fd(const char *name, int writable, int *fd_out)
{
	char path[HL_NAME_MAX + 16];
	int rc = hl__seg_path(name, path, sizeof(path));
	if (rc)
		return rc;
	int fd = shm_open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	*fd_out = fd;
	return 0;
}

int
hl__seg_open_own(const char *name, int *fd_out)
{
	int fd = -1, rc = hl__seg_open_fd(name, 1, &fd);
	if (rc)
		return rc;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		close(fd);
		return -EPERM;
	}
	*fd_out = fd;
	return 0;
}

int
hl__seg_intact(const struct hl_seg *s, const char *name, uint64_t *size_now)
{
	struct stat st, cur;
	char path[HL_NAME_MAX + 32];
	if (fstat(s->fd, &st) < 0)
		return -errno;
	*size_now = (uint64_t)st.st_size;
	if ((uint64_t)st.st_size < s->size)
		return HL_ETRUNCATED;
	/* glibc's shm_open() names /dev/shm/ + the name without its '/'. */
	if (hl__seg_path(name, path + 8, sizeof(path) - 8) == 0) {
		memcpy(path, "/dev/shm", 8);
		if (stat(path, &cur) == 0 && (cur.st_ino != st.st_ino || cur.st_dev != st.st_dev))
			return -ESTALE;
	}
	return 0;
}

int
hl__seg_unlink(const char *name)
{
	char path[HL_NAME_MAX + 16];
	int rc = hl__seg_path(name, path, sizeof(path));
	if (rc)
		return rc;
	return shm_unlink(path) < 0 ? -errno : 0;
}

/* Read the header into a private copy and validate it against the size. */
static int
read_header(int fd, struct hl_shm_header *copy, uint64_t *size)
{
	struct stat st;
	memset(copy, 0, sizeof(*copy));
	if (fstat(fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	ssize_t n = pread(fd, copy, sizeof(*copy), 0);
	if (n < 0)
		return -errno;
	return hl__seg_validate(copy, *size);
}

static int
map_common(int fd, struct hl_seg *s, int prot)
{
	struct hl_shm_header copy;
	uint64_t fsize;
	int rc = read_header(fd, &copy, &fsize);
	if (rc)
		return rc;
	void *p = mmap(NULL, copy.size, prot, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	s->base = p;
	s->size = copy.size;
	s->fd = fd;
	s->h = p;
	/* The header's layout fields are immutable after creation, but a
	 * writer with access to the object could change them after our
	 * validation of the copy: compare once more against the copy; later
	 * code only uses fields the copy vouched for. */
	if (memcmp(s->h, &copy, offsetof(struct hl_shm_header, owner_seq)) != 0) {
		munmap(p, copy.size);
		return HL_ECORRUPT;
	}
	return 0;
}

int
hl__seg_map_rw(int fd, struct hl_seg *s)
{
	return map_common(fd, s, PROT_READ | PROT_WRITE);
}

int
hl__seg_map_ro(int fd, struct hl_seg *s)
{
	return map_common(fd, s, PROT_READ);
}

int
hl__seg_map_client(int fd, struct hl_seg *s)
{
	int rc = map_common(fd, s, PROT_READ);
	if (rc)
		return rc;
	uint64_t len = s->h->ep_client_off - s->h->claims_off;
	void *p = mmap(s->base + s->h->claims_off, len, PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_FIXED, fd, (off_t)s->h->claims_off);
	if (p == MAP_FAILED) {
		rc = -errno;
		hl__seg_unmap(s);
		return rc;
	}
	return 0;
}

int
hl__seg_map_own_block(struct hl_seg *s, uint32_t ep)
{
	uint64_t off = s->h->ep_client_off + (uint64_t)ep * s->h->ep_client_stride;
	void *p = mmap(s->base + off, s->h->ep_client_stride, PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_FIXED, s->fd, (off_t)off);
	return p == MAP_FAILED ? -errno : 0;
}

void
hl__seg_unmap(struct hl_seg *s)
{
	if (s->base)
		munmap(s->base, s->size);
	s->base = NULL;
	s->h = NULL;
}
