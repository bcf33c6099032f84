/* SPDX-License-Identifier: MIT */
/*
 * cmd_size.c: heirloomctl size: the size of a segment for given capacities,
 * computed exactly as the daemons would create it, before anything is
 * created (issue 21). Never touches a segment.
 */
#include "ctl.h"
#include "out.h"

#include "heirloom/heirloom.h"
#include "layout.h"
#include "segment.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* A size with an optional K, M, G or T (powers of 1024), as the daemons
 * read their size options. 0 or -1. */
static int
parse_size(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	unsigned shift = 0;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	default: break;
	}
	if (*end || (shift && v > (max >> shift)) || (v << shift) > max)
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

int
ctl_cmd_size(struct ctl *c, const struct ctl_args *a)
{
	static const char *const names[] = { "shards",        "max-keys",  "max-observers",
		                             "max-endpoints", "max-value", "heap",
		                             "req-ring",      "ev-ring",   "history" };
	static const uint64_t maxes[] = { HL_SHARDS_MAX, 1u << 24,           1u << 24,
		                          65536,         HL_VALUE_MAX_LIMIT, 1ull << 40,
		                          1u << 30,      1u << 30,           1u << 30 };
	uint64_t v[9] = { 0 };
	for (int i = 0; i < 9; i++)
		if (a->set[i] && parse_size(a->val[i], maxes[i], &v[i]) < 0)
			return ctl_fail(c, CTL_USAGE, 0, "--%s: not a size up to %llu: '%s'",
			                names[i], (unsigned long long)maxes[i], a->val[i]);
	struct hl_layout_params p = { .shards = (uint32_t)v[SIZE_SHARDS],
		                      .max_keys = (uint32_t)v[SIZE_KEYS],
		                      .max_observers = (uint32_t)v[SIZE_OBSERVERS],
		                      .max_endpoints = (uint32_t)v[SIZE_ENDPOINTS],
		                      .max_value = (uint32_t)v[SIZE_VALUE],
		                      .heap_bytes = v[SIZE_HEAP],
		                      .req_ring_bytes = (uint32_t)v[SIZE_REQ_RING],
		                      .ev_ring_bytes = (uint32_t)v[SIZE_EV_RING],
		                      .hist_bytes = (uint32_t)v[SIZE_HISTORY] };
	struct hl_shm_header h;
	int rc = hl__layout_defaults(&p);
	if (rc == 0)
		rc = hl__layout_compute(&p, &h);
	if (rc)
		return ctl_fail(c, CTL_USAGE, rc,
		                "invalid capacities (ring sizes must be powers of two large enough "
		                "for two records of max-value; the heap must hold one value)");
	struct hl_layout_sizes z;
	hl__layout_sizes(&h, &z);
	uint64_t free_b = 0;
	int have_free = hl__shm_free_bytes(&free_b) == 0;

	struct out o;
	out_init(&o, stdout, c->json);
	out_obj_begin(&o, NULL);
	/* hl__layout_compute() copied the capacities into the header. */
	ctl_write_capacities(&o, &h);
	ctl_write_sizes(&o, &z);
	if (have_free) {
		out_u64(&o, "dev_shm_free_bytes", free_b);
		out_bool(&o, "fits", z.total <= free_b);
	}
	out_obj_end(&o);
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}
