/* SPDX-License-Identifier: MIT */
/*
 * util.h: small primitives every part of heirloom uses: clocks, futexes,
 * the key hash, process start times and hl__die(). No state.
 */
#ifndef HL_UTIL_H
#define HL_UTIL_H

#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HL_LIKELY(x)     __builtin_expect(!!(x), 1)
#define HL_UNLIKELY(x)   __builtin_expect(!!(x), 0)
#define HL_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t
hl__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The heartbeat clock (issue 22): CLOCK_MONOTONIC_COARSE, a read of the
 * vDSO's page with no hardware counter (a few ns), at tick resolution
 * (1-4 ms). One clock for every process of the machine. */
static inline uint64_t
hl__coarse_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
hl__wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Shared (not PRIVATE) futexes: the words live in a MAP_SHARED segment and
 * the waiter and waker are different processes. */
static inline int
hl__futex_wait(_Atomic uint32_t *addr, uint32_t val, const struct timespec *rel)
{
	long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, rel, NULL, 0);
	return r == 0 ? 0 : -errno;
}

static inline void
hl__futex_wake(_Atomic uint32_t *addr, int n)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* The same with a bitset (an endpoint group's word, segment.h
 * hl__ep_signal()): a waiter is woken only by a wake whose BITS meet its
 * own. Unlike FUTEX_WAIT, FUTEX_WAIT_BITSET takes an absolute
 * CLOCK_MONOTONIC time: DEADLINE_NS, as hl__now_ns() reads it. */
static inline int
hl__futex_wait_bits(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline_ns, uint32_t bits)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000ull),
		               .tv_nsec = (long)(deadline_ns % 1000000000ull) };
	long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET, val, &ts, NULL, bits);
	return r == 0 ? 0 : -errno;
}

static inline void
hl__futex_wake_bits(_Atomic uint32_t *addr, int n, uint32_t bits)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_BITSET, n, NULL, NULL, bits);
}

/* 64-bit hash of a key (wyhash-style multiply-mix over 8-byte words). The
 * value is part of the segment format: clients and worker must agree.
 *
 * Bit 63 (HL_HASH_PREFIX) tells the two kinds of slot in the key index
 * apart (layout version 5): a key's hash has it clear (hl__hash()), a
 * prefix entry's has it set (hl__hash_prefix(): the same bytes' hash with
 * the bit set). So a lookup of a key never finds a prefix entry and the
 * other way round, although both may hold the same bytes; the kind of a
 * slot survives any crash in its immutable `hash`; and both land in the
 * same bucket and shard (nbuckets <= 2^32: bit 63 never picks a bucket),
 * so a prefix observer is applied by the shard of the key with the
 * prefix's bytes, and requests route as before. */
#define HL_HASH_PREFIX (1ull << 63)

static inline uint64_t
hl__mix(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t
hl__hash(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ len;
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		h = hl__mix(h ^ w, 0xbf58476d1ce4e5b9ull);
		p += 8;
		len -= 8;
	}
	uint64_t t = 0;
	memcpy(&t, p, len);
	h = hl__mix(h ^ t ^ ((uint64_t)len << 56), 0x94d049bb133111ebull);
	return hl__mix(h, 0x2545f4914f6cdd1dull) & ~HL_HASH_PREFIX;
}

/* The hash of a prefix entry (a key slot that holds the observers of every
 * key starting with these bytes): see HL_HASH_PREFIX. */
static inline uint64_t
hl__hash_prefix(const void *prefix, size_t len)
{
	return hl__hash(prefix, len) | HL_HASH_PREFIX;
}

/* The start time of PID (field 22 of /proc/PID/stat, clock ticks since
 * boot), or 0 if the process does not exist. pid + start time names a
 * process uniquely even when the pid is reused. */
uint64_t hl__proc_start_time(int pid);

/* Whether PID with START still runs: 1 yes, 0 no. A pid that runs with
 * another start time is a new process that reused the pid: 0. */
int hl__proc_alive(int pid, uint64_t start);
/* hl__proc_alive() for a caller that must not take "cannot tell" for
 * "gone": 1 alive, 0 gone (no process, a zombie, or another start time),
 * -errno when /proc/PID/stat could not be opened for another reason than
 * the process's absence (EMFILE, ENFILE, ENOMEM). */
int hl__proc_check(int pid, uint64_t start);
/* hl__proc_start_time() into *OUT, returning -errno (and 0 in *OUT) when
 * /proc could not be read for another reason than the process's absence. */
int hl__proc_start_time_r(int pid, uint64_t *out);

/* Abort with file:func:line and a message: for our own broken invariants
 * only, never for bytes a client can write. */
_Noreturn void hl__die_at(const char *file, const char *func, int line, const char *msg);
#define hl__die(msg) hl__die_at(__FILE__, __func__, __LINE__, (msg))

/* Relaxed word-wise copies for data that a concurrent writer may change under
 * a sequence lock: the reader discards the copy when the lock moved, and the
 * accesses are atomic so that the race is defined behaviour (and TSan-clean). */
void hl__racy_copy_out(void *dst, const void *src, size_t n);
void hl__racy_copy_in(void *dst, const void *src, size_t n);

#endif /* HL_UTIL_H */
