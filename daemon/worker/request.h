/* SPDX-License-Identifier: MIT */
/*
 * request.h: validating one request record copied out of a client's
 * request ring. Pure functions of the header and the private copy: no
 * worker state, no locks, no I/O, so that the worker (shard.c) and the
 * fuzz target (tests/fuzz/fuzz_request.c) run the very same code.
 */
#ifndef HL_W_REQUEST_H
#define HL_W_REQUEST_H

#include "layout.h"

#include <stdint.h>

/*
 * Validate R, a private copy of LEN bytes taken once out of a request ring
 * of shard SHARD of the segment whose (validated) header is H. Checks the
 * framing (size, lengths of key, meta and value, 8-byte padding), the type,
 * the fields each type must leave zero, and that a keyed request belongs to
 * SHARD. Returns 0, or -EPROTO for anything a correct client never writes:
 * the caller drops the endpoint. Never reads beyond R[0..LEN); LEN may be
 * anything (a short copy is refused before any field past it is read).
 */
int hl_w_check_req(const struct hl_shm_header *h, uint32_t shard, const struct hl_req *r,
                   uint32_t len);

#endif /* HL_W_REQUEST_H */
