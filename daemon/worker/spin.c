/* SPDX-License-Identifier: MIT */
/*
 * spin.c: the shard thread's idle predictor (spin.h). It owns nothing but
 * the numbers in struct hl_w_spin and calls nothing of the worker: no
 * clock, no shared memory, no threads.
 */
#include "spin.h"

#include <string.h>

void
hl_w_spin_init(struct hl_w_spin *s)
{
	for (uint32_t i = 0; i < HL_W_SPIN_HIST; i++)
		s->gap_ns[i] = UINT32_MAX;
	s->next = 0;
}

void
hl_w_spin_record(struct hl_w_spin *s, uint64_t gap_ns)
{
	s->gap_ns[s->next] = gap_ns > UINT32_MAX ? UINT32_MAX : (uint32_t)gap_ns;
	s->next = (s->next + 1) % HL_W_SPIN_HIST;
}

uint64_t
hl_w_spin_budget(const struct hl_w_spin *s, uint64_t max_ns)
{
	uint32_t g[HL_W_SPIN_HIST];

	if (max_ns == 0)
		return 0;
	/* The QUORUM-th smallest gap: insertion sort of eight numbers. */
	memcpy(g, s->gap_ns, sizeof(g));
	for (uint32_t i = 1; i < HL_W_SPIN_HIST; i++) {
		uint32_t v = g[i], j = i;
		for (; j > 0 && g[j - 1] > v; j--)
			g[j] = g[j - 1];
		g[j] = v;
	}
	uint64_t q = g[HL_W_SPIN_QUORUM - 1];
	if (q > max_ns)
		return 0;
	q += q / 4;
	return q < max_ns ? q : max_ns;
}
