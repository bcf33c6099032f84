/* SPDX-License-Identifier: MIT */
/*
 * history.h: the worker's side of the per-shard history rings (layout.h,
 * "history"; docs/architecture.md, "History and resume").
 */
#ifndef HL_W_HISTORY_H
#define HL_W_HISTORY_H

#include "worker.h"

/* The change a history record describes (what dispatch delivers, less the
 * old value). */
struct hl_w_hist_src {
	uint16_t type; /* HL_EVR_PUT / HL_EVR_DELETE */
	uint64_t rev, ts;
	uint32_t pub_pid;
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *meta;
	uint32_t meta_len;
	const uint8_t *val;
	uint32_t val_len;
};

/* Append change S to shard SH's history unless it is there already (its
 * revision is not above the last one appended: a dispatch finished again
 * by recovery). Shard thread (or recovery before the threads run), after
 * the change's commit and before its events are written. Never fails:
 * room is made by evicting the oldest records. */
void hl_w_hist_append(struct hl_shard *sh, const struct hl_w_hist_src *s);

/* Recovery part 1, before any dispatch: learn where every shard's ring
 * ends and its last revision, in O(1) from the notes the last append left
 * (layout.h, hl_shm_hist.last_pos). A ring whose ends are not what any
 * crash leaves is emptied (hl_w_hist_empty() with the table's revision).
 * Returns the repairs made. The records themselves are checked later, by
 * hl_w_hist_scan(), and at eviction by the append. */
uint64_t hl_w_hist_recover(struct hl_worker *w);

/* Recovery part 2 (any thread, while shard threads append): read every
 * ring as a client does; a ring holding what no writer writes gets
 * sh->hist_bad, and its shard thread empties it at its next append.
 * Returns the rings found damaged. */
uint64_t hl_w_hist_scan(struct hl_worker *w);

/* No thread runs (hl_w_recover()): empty now the rings the scan flagged. */
void hl_w_hist_fix(struct hl_worker *w);

/* Empty shard SH's ring (the shard thread, or no thread runs): tail =
 * head, floor_rev = sh->hist_last, so that readers get "compacted" or a
 * lag, never a wrong record. WHY goes to the log. */
void hl_w_hist_empty(struct hl_shard *sh, const char *why);

/* For hl_w_check() (no thread runs): every shard's ring holds, and ends
 * with the change the shard thread last appended. 0, or -EPROTO with
 * MSG filled. */
int hl_w_hist_check(struct hl_worker *w, char *msg, size_t len);

#endif /* HL_W_HISTORY_H */
