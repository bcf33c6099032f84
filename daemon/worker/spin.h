/* SPDX-License-Identifier: MIT */
/*
 * spin.h: the shard thread's idle strategy (issue 16). When a shard thread
 * runs out of requests it either spins (polls its pending bits, yielding
 * the core each round) or sleeps on its doorbell. Spinning saves the next
 * request the wake-up of a sleeping thread (about 20 us on a 2-vCPU VM,
 * where the vCPU itself halts), but every microsecond spun is a
 * microsecond of CPU: a fixed 50 us spin at 12,500 paced requests a second
 * (one every 80 us) caught none of them and burned 50 us of CPU on each.
 *
 * So the thread spins only when its recent idle gaps (from going idle to
 * the next request) predict one within --spin-us: it keeps the last
 * HL_W_SPIN_HIST gaps and spins, up to --spin-us, for a little longer than
 * the gap that HL_W_SPIN_QUORUM of them did not exceed. At low rates the
 * gaps are long and it never spins. A gap measured across a sleep includes
 * the wake-up itself, so arrivals less than a wake-up shorter than
 * --spin-us apart do not teach it to spin: a choice for less CPU.
 *
 * Pure functions of a caller-owned struct: no clock, no threads (one
 * struct per shard thread), so tests/test_spin.c drives them with numbers.
 */
#ifndef HL_WORKER_SPIN_H
#define HL_WORKER_SPIN_H

#include <stdint.h>

#define HL_W_SPIN_HIST   8u /* idle gaps remembered */
#define HL_W_SPIN_QUORUM 6u /* of them that must fall within the spin */

struct hl_w_spin {
	uint32_t gap_ns[HL_W_SPIN_HIST]; /* saturated at UINT32_MAX (4.3 s) */
	uint32_t next;                   /* index of the oldest gap */
};

/* Start with no evidence: every gap "long", so the first idle sleeps. */
void hl_w_spin_init(struct hl_w_spin *s);

/* An idle period of gap_ns ended with a request (the oldest is forgotten). */
void hl_w_spin_record(struct hl_w_spin *s, uint64_t gap_ns);

/* How long to spin now that the thread is idle: 0 (sleep at once) unless
 * at least HL_W_SPIN_QUORUM of the remembered gaps are at most max_ns;
 * then the largest of those quorum gaps plus a quarter, capped at max_ns.
 * max_ns 0 (--spin-us 0) always gives 0. */
uint64_t hl_w_spin_budget(const struct hl_w_spin *s, uint64_t max_ns);

#endif /* HL_WORKER_SPIN_H */
