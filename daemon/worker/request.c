/* SPDX-License-Identifier: MIT */
/*
 * request.c: the worker's validation of request records (see request.h).
 * Moved out of shard.c unchanged in substance so that it can be fuzzed in
 * isolation; it must stay free of worker state.
 */
#include "request.h"

#include "heirloom/heirloom.h"
#include "segment.h"
#include "util.h"

#include <errno.h>

int
hl_w_check_req(const struct hl_shm_header *h, uint32_t shard, const struct hl_req *r, uint32_t len)
{
	if (len < sizeof(*r) || r->h.size != len)
		return -EPROTO;
	if (r->h.key_len > HL_KEY_MAX || r->meta_len > HL_META_MAX || r->val_len > h->max_value)
		return -EPROTO;
	uint64_t need = sizeof(*r) + (uint64_t)r->h.key_len + r->meta_len + r->val_len;
	if (hl__rec_align((uint32_t)need) != len)
		return -EPROTO;
	/* TAKEN and WITHDRAWN only ever follow SYNC, never both (layout.h). */
	if (r->flags & ~(HL_REQF_SYNC | HL_REQF_TAKEN | HL_REQF_WITHDRAWN))
		return -EPROTO;
	if ((r->flags & (HL_REQF_TAKEN | HL_REQF_WITHDRAWN)) &&
	    (!(r->flags & HL_REQF_SYNC) || (r->flags & (HL_REQF_TAKEN | HL_REQF_WITHDRAWN)) ==
	                                           (HL_REQF_TAKEN | HL_REQF_WITHDRAWN)))
		return -EPROTO;
	switch (r->h.type) {
	case HL_REQ_PUBLISH_IF:
	case HL_REQ_DELETE_IF:
		/* The answer (a revision or a conflict) is all a conditional
		 * request is for: only the SYNC path carries it. */
		if (!(r->flags & HL_REQF_SYNC))
			return -EPROTO;
		/* fall through */
	case HL_REQ_PUBLISH:
	case HL_REQ_OBSERVE:
	case HL_REQ_DELETE:
		if (r->h.key_len == 0)
			return -EPROTO;
		/* An observe may carry 8 value bytes: its start revision
		 * (hl_observe_opts.start_rev, HL_OBSERVE_FROM_REV). */
		if (r->h.type != HL_REQ_PUBLISH && r->h.type != HL_REQ_PUBLISH_IF &&
		    (r->meta_len ||
		     (r->val_len && !(r->h.type == HL_REQ_OBSERVE && r->val_len == 8))))
			return -EPROTO;
		/* An observer's filters: only the known ones, never both
		 * event types filtered (the client refuses both too). */
		if (r->h.type == HL_REQ_OBSERVE &&
		    ((r->arg & ~(uint64_t)HL_OBSERVE_ALL) ||
		     (r->arg & (HL_OBSERVE_NOPUT | HL_OBSERVE_NODELETE)) ==
		             (HL_OBSERVE_NOPUT | HL_OBSERVE_NODELETE)))
			return -EPROTO;
		/* The client routes by key: a key of another shard here means a
		 * broken or hostile client (the other shard owns that key). */
		if (hl__shard_of_bucket(h, hl__bucket_of(h, hl__hash(r + 1, r->h.key_len))) !=
		    shard)
			return -EPROTO;
		return 0;
	case HL_REQ_UNOBSERVE:
	case HL_REQ_CLOSE: return (r->h.key_len || r->val_len || r->meta_len) ? -EPROTO : 0;
	case HL_REQ_WAKEFD: /* hl_fd(): shard 0 only, nothing but the header */
		return (shard || r->h.key_len || r->val_len || r->meta_len || r->arg) ? -EPROTO : 0;
	default: return -EPROTO;
	}
}
