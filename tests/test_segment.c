/* SPDX-License-Identifier: MIT */
/*
 * test_segment.c: the shm object itself (lib/segment.c): creation with a
 * complete header, validation of untrusted headers (magic, version, format
 * word, size, capacities and offsets), the read-only client mapping, names,
 * modes, and hl_open() on objects that are missing or not segments. Every
 * test gets its own object name ("t<pid>_<n>") and unlinks it in teardown.
 * ftruncate() failures are injected with -Wl,--wrap=ftruncate.
 */
#include "harness.h"

#include "layout.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- injected ftruncate() failure (0 = pass through) ---- */

int __real_ftruncate(int fd, off_t len);
int __wrap_ftruncate(int fd, off_t len);
static int ftruncate_errno;

int
__wrap_ftruncate(int fd, off_t len)
{
	if (ftruncate_errno) {
		errno = ftruncate_errno;
		return -1;
	}
	return __real_ftruncate(fd, len);
}

/* ---- fixture ---- */

struct fx {
	char name[64];
	char path[96];
	int fd;
	struct hl_seg seg;
	struct hl_layout_params p;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	snprintf(f->name, sizeof(f->name), "%s", hl_t_name());
	if (hl__seg_path(f->name, f->path, sizeof(f->path)))
		return -1;
	f->fd = -1;
	/* Small but legal: rings just above twice the largest record. */
	f->p = (struct hl_layout_params){ .max_keys = 64,
		                          .max_observers = 256,
		                          .max_endpoints = 4,
		                          .max_value = 256,
		                          .shards = 2,
		                          .req_ring_bytes = 4096,
		                          .ev_ring_bytes = 4096,
		                          .heap_bytes = 64 * 1024,
		                          .hist_bytes = 2048 };
	ftruncate_errno = 0;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	ftruncate_errno = 0;
	hl__seg_unmap(&f->seg);
	if (f->fd >= 0)
		close(f->fd);
	hl__seg_unlink(f->name);
	free(f);
	return 0;
}

static void
create_small(struct fx *f)
{
	assert_int_equal(hl__layout_defaults(&f->p), 0);
	assert_int_equal(hl__seg_create(f->name, &f->p, 0660, (gid_t)-1, &f->fd), 0);
	assert_true(f->fd >= 0);
}

/* A private copy of the object's header and its real size. */
static uint64_t
read_copy(const struct fx *f, struct hl_shm_header *h)
{
	struct stat st;
	assert_int_equal(fstat(f->fd, &st), 0);
	memset(h, 0, sizeof(*h));
	assert_true(pread(f->fd, h, sizeof(*h), 0) >= 0);
	return (uint64_t)st.st_size;
}

/* The object's header mapped writable, bypassing validation (the tamperer). */
static struct hl_shm_header *
raw_header(const struct fx *f)
{
	void *p = mmap(NULL, sizeof(struct hl_shm_header), PROT_READ | PROT_WRITE, MAP_SHARED,
	               f->fd, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static void
raw_release(struct hl_shm_header *h)
{
	munmap(h, sizeof(*h));
}

/* Both mapping paths must refuse the object with WANT (never fault). */
static void
assert_maps_fail(struct fx *f, int want)
{
	struct hl_seg s = { 0 };
	assert_int_equal(hl__seg_map_rw(f->fd, &s), want);
	assert_null(s.base);
	int cfd;
	assert_int_equal(hl__seg_open_fd(f->name, 1, &cfd), 0);
	assert_int_equal(hl__seg_map_client(cfd, &s), want);
	close(cfd);
}

/* ---- creation ---- */

static void
test_create_with_defaults_has_documented_capacities(void **state)
{
	struct fx *f = *state;
	struct hl_layout_params p = { 0 };
	assert_int_equal(hl__layout_defaults(&p), 0);
	assert_int_equal(p.max_keys, HL_DEF_KEYS);
	assert_int_equal(p.max_observers, HL_DEF_OBSERVERS);
	assert_int_equal(p.max_endpoints, HL_DEF_ENDPOINTS);
	assert_true(p.max_value >= 4096);
	assert_true(p.shards >= 1 && p.shards <= HL_DEF_SHARDS_MAX);
	assert_int_equal(hl__seg_create(f->name, &p, 0660, (gid_t)-1, &f->fd), 0);
	assert_int_equal(hl__seg_map_rw(f->fd, &f->seg), 0);

	const struct hl_shm_header *h = f->seg.h;
	struct stat st;
	assert_int_equal(fstat(f->fd, &st), 0);
	assert_int_equal(h->magic, HL_MAGIC);
	assert_int_equal(h->version, HL_LAYOUT_VERSION);
	assert_int_equal(h->format, hl__layout_format());
	assert_int_equal(h->size, (uint64_t)st.st_size);
	assert_true(h->max_keys == p.max_keys && h->max_observers == p.max_observers);
	assert_true(h->max_endpoints == p.max_endpoints && h->max_value == p.max_value);
	assert_int_equal(atomic_load(&h->next_observer_seq), 1);
	assert_true(h->created_ns > 0);
}

static void
test_create_with_small_params_lays_out_regions_in_order(void **state)
{
	struct fx *f = *state;
	create_small(f);
	assert_int_equal(hl__seg_map_rw(f->fd, &f->seg), 0);
	const struct hl_shm_header *h = f->seg.h;
	const uint64_t offs[] = { h->buckets_off,   h->keys_off,   h->observers_off, h->heap_off,
		                  h->ep_worker_off, h->claims_off, h->ep_client_off, h->size };
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		assert_int_equal(offs[i] % HL_PAGE, 0);
		if (i)
			assert_true(offs[i] > offs[i - 1]);
	}
	assert_true(h->buckets_off >= sizeof(*h));
	/* The last endpoint's last ring ends inside its region. */
	assert_true((uint64_t)(hl__ev_ring(&f->seg, 3, 1) + h->ev_ring_bytes - f->seg.base) <=
	            h->claims_off);
	assert_true((uint64_t)(hl__req_ring(&f->seg, 3, 1) + h->req_ring_bytes - f->seg.base) <=
	            h->size);
}

static void
test_validate_accepts_fresh_header(void **state)
{
	struct fx *f = *state;
	create_small(f);
	struct hl_shm_header h;
	uint64_t size = read_copy(f, &h);
	assert_int_equal(hl__seg_validate(&h, size), 0);
	struct hl_seg s = { 0 };
	int cfd;
	assert_int_equal(hl__seg_open_fd(f->name, 1, &cfd), 0);
	assert_int_equal(hl__seg_map_client(cfd, &s), 0);
	hl__seg_unmap(&s);
	close(cfd);
}

static void
test_create_twice_fails_with_eexist_and_keeps_the_first(void **state)
{
	struct fx *f = *state;
	create_small(f);
	int fd2 = -1;
	assert_int_equal(hl__seg_create(f->name, &f->p, 0660, (gid_t)-1, &fd2), -EEXIST);
	assert_int_equal(fd2, -1);
	assert_int_equal(hl__seg_map_rw(f->fd, &f->seg), 0);
}

static void
test_create_applies_mode_0660_despite_umask_077(void **state)
{
	struct fx *f = *state;
	mode_t old = umask(077);
	int rc = hl__seg_create(f->name, &f->p, 0660, (gid_t)-1, &f->fd);
	umask(old);
	assert_int_equal(rc, 0);
	struct stat st;
	assert_int_equal(fstat(f->fd, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
}

static void
test_create_whose_ftruncate_fails_leaves_no_object(void **state)
{
	struct fx *f = *state;
	ftruncate_errno = ENOSPC;
	assert_int_equal(hl__seg_create(f->name, &f->p, 0660, (gid_t)-1, &f->fd), -ENOSPC);
	ftruncate_errno = 0;
	assert_int_equal(f->fd, -1);
	assert_int_equal(shm_open(f->path, O_RDONLY, 0), -1);
	assert_int_equal(errno, ENOENT);
}

static void
test_invalid_names_are_rejected_with_einval(void **state)
{
	struct fx *f = *state;
	char long_name[HL_NAME_MAX + 2], max_name[HL_NAME_MAX + 1], buf[128];
	memset(long_name, 'x', HL_NAME_MAX + 1);
	long_name[HL_NAME_MAX + 1] = '\0';
	memset(max_name, 'x', HL_NAME_MAX);
	max_name[HL_NAME_MAX] = '\0';
	const char *bad[] = { "",    "a/b",   "/x",      long_name, "a\nb",
		              "a b", "tab\t", "del\x7f", "\xc3\xa9" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = -1;
		struct hl_client *c = NULL;
		assert_int_equal(hl__seg_path(bad[i], buf, sizeof(buf)), -EINVAL);
		assert_int_equal(hl__seg_create(bad[i], &f->p, 0660, (gid_t)-1, &fd), -EINVAL);
		assert_int_equal(fd, -1);
		assert_int_equal(hl_open(bad[i], NULL, &c), -EINVAL);
		assert_null(c);
	}
	assert_int_equal(hl__seg_path(max_name, buf, sizeof(buf)), 0);
	assert_string_equal(buf + strlen(HL_SHM_PREFIX), max_name);
}

static void
test_layout_defaults_rejects_rings_too_small_for_max_value(void **state)
{
	(void)state;
	struct hl_layout_params p = { .max_value = 4096, .req_ring_bytes = 4096 };
	assert_int_equal(hl__layout_defaults(&p), -EINVAL);
	p = (struct hl_layout_params){ .max_value = 4096, .ev_ring_bytes = 8192 };
	assert_int_equal(hl__layout_defaults(&p), -EINVAL);
	p = (struct hl_layout_params){ .req_ring_bytes = 3 * 65536 }; /* not a power of two */
	assert_int_equal(hl__layout_defaults(&p), -EINVAL);
	p = (struct hl_layout_params){ .max_value = HL_VALUE_MAX_LIMIT + 1 };
	assert_int_equal(hl__layout_defaults(&p), -EINVAL);
	/* Defaulted rings grow to hold two of the largest records. */
	p = (struct hl_layout_params){ .max_value = HL_VALUE_MAX_LIMIT };
	assert_int_equal(hl__layout_defaults(&p), 0);
	assert_true(p.req_ring_bytes >= 2 * (sizeof(struct hl_req) + HL_VALUE_MAX_LIMIT));
	assert_true(p.ev_ring_bytes >= 2 * (sizeof(struct hl_evrec) + 2 * HL_VALUE_MAX_LIMIT));
}

/* 64 shards of 64 MiB rings need 4 GiB per endpoint: more than the 32-bit
 * stride fields hold. Accepting that wraps the stride and puts every ring
 * but the first outside the segment, where the first access faults. */
static const struct hl_layout_params wide = { .max_keys = 64,
	                                      .max_observers = 64,
	                                      .max_endpoints = 1,
	                                      .max_value = 256,
	                                      .shards = 64,
	                                      .req_ring_bytes = 4096,
	                                      .ev_ring_bytes = 4096,
	                                      .heap_bytes = 65536,
	                                      .hist_bytes = 2048 };

static void
test_layout_rejects_rings_that_overflow_the_endpoint_stride(void **state)
{
	(void)state;
	struct hl_layout_params ev = wide, req = wide;
	ev.ev_ring_bytes = req.req_ring_bytes = 1u << 26;
	struct hl_shm_header h;
	uint64_t need = hl__ep_ctl_bytes(64) + 64ull * (1u << 26);
	if (hl__layout_defaults(&ev) == 0 && hl__layout_compute(&ev, &h) == 0)
		fail_msg("64 x 64 MiB event rings accepted: ep_worker_stride %u, rings need %llu",
		         h.ep_worker_stride, (unsigned long long)need);
	if (hl__layout_defaults(&req) == 0 && hl__layout_compute(&req, &h) == 0)
		fail_msg("64 x 64 MiB request rings accepted: ep_client_stride %u, rings need %llu",
		         h.ep_client_stride, (unsigned long long)need);
}

/* The same overflow arriving in a header (any writer of the object can
 * make one): the wrapped stride is self-consistent, so only a range check
 * on the capacities can refuse it. */
static void
test_validate_refuses_header_whose_rings_overflow_the_endpoint_stride(void **state)
{
	(void)state;
	struct hl_shm_header h;
	assert_int_equal(hl__layout_compute(&wide, &h), 0);
	/* What the layout arithmetic makes of 64 x 64 MiB event rings. */
	uint64_t claims_bytes = h.ep_client_off - h.claims_off,
	         client_bytes = h.size - h.ep_client_off;
	h.ev_ring_bytes = 1u << 26;
	h.ep_worker_stride = (uint32_t)(hl__ep_ctl_bytes(64) + 64ull * h.ev_ring_bytes);
	h.claims_off =
	        (h.ep_worker_off + h.ep_worker_stride + HL_PAGE - 1) & ~(uint64_t)(HL_PAGE - 1);
	h.ep_client_off = h.claims_off + claims_bytes;
	h.size = h.ep_client_off + client_bytes;
	h.magic = HL_MAGIC;
	int rc = hl__seg_validate(&h, h.size);
	if (rc != HL_ECORRUPT)
		fail_msg("header with 64 x 64 MiB event rings in a %llu-byte segment: got %s, want "
		         "HL_ECORRUPT (ring of shard 63 would start at byte %llu)",
		         (unsigned long long)h.size, hl_err_name(rc),
		         (unsigned long long)(h.ep_worker_off + hl__ep_ctl_bytes(64) +
		                              63ull * h.ev_ring_bytes));
}

/* ---- validation of untrusted headers ---- */

#define FIELD(f) offsetof(struct hl_shm_header, f), sizeof(((struct hl_shm_header *)0)->f)

/* One field of a header changed by DELTA (wrapping). */
struct tamper {
	const char *what;
	size_t off, width;
	int64_t delta;
};

static void
apply(void *hdr, const struct tamper *t)
{
	uint8_t *p = (uint8_t *)hdr + t->off;
	uint64_t v = 0;
	memcpy(&v, p, t->width); /* little-endian: the low bytes */
	v = (uint64_t)((int64_t)v + t->delta);
	memcpy(p, &v, t->width);
}

/* T applied to a private copy is refused by hl__seg_validate() with WANT,
 * and applied to the object by both mappings and by hl_open(); then the
 * object is restored. */
static void
assert_refused(struct fx *f, const struct tamper *t, int want)
{
	struct hl_shm_header good, h;
	uint64_t size = read_copy(f, &good);
	h = good;
	apply(&h, t);
	int rc = hl__seg_validate(&h, size);
	if (rc != want)
		fail_msg("tampered %s: got %s, want %s", t->what, hl_err_name(rc),
		         hl_err_name(want));
	struct hl_shm_header *raw = raw_header(f);
	apply(raw, t);
	raw_release(raw);
	assert_maps_fail(f, want);
	struct hl_client *c = NULL;
	assert_int_equal(hl_open(f->name, NULL, &c), want);
	assert_null(c);
	raw = raw_header(f);
	memcpy(raw, &good, offsetof(struct hl_shm_header, owner_seq));
	raw_release(raw);
}

static void
test_wrong_magic_is_refused_with_ebadmagic(void **state)
{
	struct fx *f = *state;
	create_small(f);
	assert_refused(f, &(struct tamper){ "magic", FIELD(magic), 1 }, HL_EBADMAGIC);
	assert_refused(f, &(struct tamper){ "magic", FIELD(magic), 1ll << 40 }, HL_EBADMAGIC);
}

/* hl__seg_create() stores the magic last: a creator killed before that
 * leaves magic 0, which must read as "not a segment", not as a segment. */
static void
test_zero_magic_left_by_crash_during_creation_is_refused(void **state)
{
	struct fx *f = *state;
	create_small(f);
	assert_refused(f, &(struct tamper){ "magic", FIELD(magic), -(int64_t)HL_MAGIC },
	               HL_EBADMAGIC);
}

static void
test_wrong_version_is_refused_with_eversion(void **state)
{
	struct fx *f = *state;
	create_small(f);
	assert_refused(f, &(struct tamper){ "version", FIELD(version), 1 }, HL_EVERSION);
	assert_refused(f, &(struct tamper){ "version", FIELD(version), -1 }, HL_EVERSION);
}

static void
test_wrong_format_word_or_header_size_is_refused_with_eversion(void **state)
{
	struct fx *f = *state;
	create_small(f);
	assert_refused(f, &(struct tamper){ "format", FIELD(format), 0x100 }, HL_EVERSION);
	assert_refused(f, &(struct tamper){ "header_size", FIELD(header_size), 64 }, HL_EVERSION);
}

/* A mapping of the header's full size over a shorter object would SIGBUS
 * on first touch; the attach must say HL_ETRUNCATED instead. */
static void
test_object_shorter_than_its_header_says_is_refused_with_etruncated(void **state)
{
	struct fx *f = *state;
	create_small(f);
	struct hl_shm_header h;
	uint64_t size = read_copy(f, &h);
	assert_refused(f, &(struct tamper){ "size", FIELD(size), 1 }, HL_ETRUNCATED);
	const off_t lens[] = { (off_t)(size - HL_PAGE), (off_t)sizeof(h) + 8, (off_t)sizeof(h) - 1,
		               20 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		assert_int_equal(ftruncate(f->fd, lens[i]), 0);
		assert_maps_fail(f, HL_ETRUNCATED);
		struct hl_client *c = NULL;
		assert_int_equal(hl_open(f->name, NULL, &c), HL_ETRUNCATED);
		assert_null(c);
	}
}

static const struct tamper tampers[] = {
	{ "buckets_off", FIELD(buckets_off), HL_PAGE },
	{ "observers_off", FIELD(observers_off), -(int64_t)HL_PAGE },
	{ "heap_off", FIELD(heap_off), HL_PAGE },
	{ "claims_off", FIELD(claims_off), -(int64_t)HL_PAGE },
	{ "ep_client_off", FIELD(ep_client_off), HL_PAGE },
	{ "size", FIELD(size), -(int64_t)HL_PAGE },
	{ "nbuckets", FIELD(nbuckets), 1 },
	{ "key_stride", FIELD(key_stride), 64 },
	{ "ep_worker_stride", FIELD(ep_worker_stride), HL_PAGE },
	{ "heap_chunk", FIELD(heap_chunk), 1 },
	{ "heap_bytes", FIELD(heap_bytes), 64 * 1024 },
	{ "max_keys to 0", FIELD(max_keys), -64 },
	{ "max_observers", FIELD(max_observers), 1 },
	{ "max_value over the limit", FIELD(max_value), HL_VALUE_MAX_LIMIT },
	{ "shards", FIELD(shards), 1 },
	{ "req_ring_bytes", FIELD(req_ring_bytes), 4096 },
	{ "ev_ring_bytes too small", FIELD(ev_ring_bytes), -2048 }
};

static void
test_tampered_offset_or_capacity_is_refused_with_ecorrupt(void **state)
{
	struct fx *f = *state;
	create_small(f);
	for (size_t i = 0; i < sizeof(tampers) / sizeof(tampers[0]); i++)
		assert_refused(f, &tampers[i], HL_ECORRUPT);
	assert_int_equal(hl__seg_map_rw(f->fd, &f->seg), 0); /* restored intact */
}

/* ---- hl_open() on things that are not segments ---- */

static void
test_open_of_missing_segment_gives_enoent(void **state)
{
	struct fx *f = *state;
	/* "If hl_open() fails there is nothing to close and *out is untouched." */
	struct hl_client *const sentinel = (struct hl_client *)(void *)f;
	struct hl_client *c = sentinel;
	assert_int_equal(hl_open(f->name, NULL, &c), -ENOENT);
	assert_ptr_equal(c, sentinel);
}

static void
test_open_of_garbage_object_gives_ebadmagic(void **state)
{
	struct fx *f = *state;
	f->fd = shm_open(f->path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(f->fd >= 0);
	struct hl_client *c = NULL;
	/* Empty: not even a magic to read. */
	assert_int_equal(hl_open(f->name, NULL, &c), HL_EBADMAGIC);
	uint8_t junk[4 * HL_PAGE];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131u + 7u);
	assert_int_equal(pwrite(f->fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	assert_int_equal(hl_open(f->name, NULL, &c), HL_EBADMAGIC);
	assert_null(c);
}

/* ---- the client mapping ---- */

enum target { T_HEADER, T_HEAP, T_EP_WORKER, T_CLAIM, T_DOORBELL, T_OWN_BLOCK, T_OTHER_BLOCK };

/* In a child: map as a client owning endpoint 0 and write one byte of
 * TARGET. Exits 0 when the write went through; dies of SIGSEGV otherwise. */
static int
client_write_status(struct fx *f, enum target t)
{
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core);
		signal(SIGSEGV, SIG_DFL); /* not cmocka's handler */
		struct hl_seg s = { 0 };
		int fd;
		if (hl__seg_open_fd(f->name, 1, &fd) || hl__seg_map_client(fd, &s) ||
		    hl__seg_map_own_block(&s, 0))
			_exit(2);
		volatile uint8_t *p = NULL;
		switch (t) {
		case T_HEADER: p = (uint8_t *)&s.h->owner_pid; break;
		case T_HEAP: p = s.base + s.h->heap_off; break;
		case T_EP_WORKER: p = (uint8_t *)hl__epw(&s, 0); break;
		case T_CLAIM: p = (uint8_t *)hl__claim(&s, 0); break;
		case T_DOORBELL: p = (uint8_t *)hl__doorbell(&s, 1); break;
		case T_OWN_BLOCK: p = (uint8_t *)hl__req_ring(&s, 0, 1); break;
		case T_OTHER_BLOCK: p = (uint8_t *)hl__epc(&s, 1); break;
		}
		*p = (uint8_t)(*p + 1);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static void
test_client_mapping_faults_on_writes_outside_claims_and_own_block(void **state)
{
	struct fx *f = *state;
	create_small(f);
	const enum target ro[] = { T_HEADER, T_HEAP, T_EP_WORKER, T_OTHER_BLOCK };
	for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++) {
		int st = client_write_status(f, ro[i]);
		if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
			fail_msg("target %d: child status %#x, want SIGSEGV", (int)ro[i], st);
	}
	/* And nothing was written through. */
	assert_int_equal(hl__seg_map_rw(f->fd, &f->seg), 0);
	assert_int_equal(atomic_load(&f->seg.h->owner_pid), 0);
}

static void
test_client_mapping_allows_writes_to_claims_and_own_block(void **state)
{
	struct fx *f = *state;
	create_small(f);
	const enum target rw[] = { T_CLAIM, T_DOORBELL, T_OWN_BLOCK };
	for (size_t i = 0; i < sizeof(rw) / sizeof(rw[0]); i++) {
		int st = client_write_status(f, rw[i]);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail_msg("target %d: child status %#x, want exit 0", (int)rw[i], st);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_create_with_defaults_has_documented_capacities),
		T(test_create_with_small_params_lays_out_regions_in_order),
		T(test_validate_accepts_fresh_header),
		T(test_create_twice_fails_with_eexist_and_keeps_the_first),
		T(test_create_applies_mode_0660_despite_umask_077),
		T(test_create_whose_ftruncate_fails_leaves_no_object),
		T(test_invalid_names_are_rejected_with_einval),
		T(test_layout_defaults_rejects_rings_too_small_for_max_value),
		T(test_layout_rejects_rings_that_overflow_the_endpoint_stride),
		T(test_validate_refuses_header_whose_rings_overflow_the_endpoint_stride),
		T(test_wrong_magic_is_refused_with_ebadmagic),
		T(test_zero_magic_left_by_crash_during_creation_is_refused),
		T(test_wrong_version_is_refused_with_eversion),
		T(test_wrong_format_word_or_header_size_is_refused_with_eversion),
		T(test_object_shorter_than_its_header_says_is_refused_with_etruncated),
		T(test_tampered_offset_or_capacity_is_refused_with_ecorrupt),
		T(test_open_of_missing_segment_gives_enoent),
		T(test_open_of_garbage_object_gives_ebadmagic),
		T(test_client_mapping_faults_on_writes_outside_claims_and_own_block),
		T(test_client_mapping_allows_writes_to_claims_and_own_block),
#undef T
	};
	return cmocka_run_group_tests_name("segment", tests, NULL, NULL);
}
