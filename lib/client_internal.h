/* SPDX-License-Identifier: MIT */
/*
 * client_internal.h: what tests and tools inside the tree may reach of a
 * struct hl_client beyond the public API. Never installed; nothing here is
 * a stable interface.
 */
#ifndef HL_CLIENT_INTERNAL_H
#define HL_CLIENT_INTERNAL_H

#include "heirloom/heirloom.h"
#include "segment.h"

#include <stdint.h>

/* The client's mapping of its segment and, in *ep (may be NULL), the index
 * of the endpoint it claimed. Borrowed: valid until hl_close(c). Only the
 * claims region and the client's own ep_client block are writable. Tests use
 * it to play a misbehaving or unlucky client (e.g. rewrite the claim's start
 * time as if the pid had been reused). */
struct hl_seg *hl__client_seg(struct hl_client *c, uint32_t *ep);

#endif /* HL_CLIENT_INTERNAL_H */
