/* SPDX-License-Identifier: MIT */
/*
 * owner.h: the owner record in the segment header (struct hl_shm_header,
 * "ownership"): who owns the table (role, pid, start time) at which epoch,
 * under the owner_seq sequence lock. The one writer and the one reader of
 * it, shared by the keeper, the worker, heirloomctl and the tests, so that
 * nobody reads it without the lock. Internal (hl__): reached through the
 * static library, never part of the public API. Policy (who may take the
 * table, when) belongs to the keeper, never here.
 *
 * Synchronization:        write  read  repair
 *   keeper                  X     -      X (at start, segment locked)
 *   worker, standalone      X     -      X (no living keeper)
 *   heirloomctl, tests      -     -      -   (never write)
 * X = the caller must be the record's only writer; - = free, any thread of
 * any process, concurrent with a writer.
 */
#ifndef HL_OWNER_H
#define HL_OWNER_H

#include "layout.h"

#include <stdint.h>

/* A consistent copy of the owner record. */
struct hl_owner {
	uint64_t epoch;
	uint32_t role; /* HL_ROLE_* */
	uint32_t pid;
	uint64_t start; /* the owner's start time (proc stat field 22) */
};

/*
 * Write a new owner ROLE/PID/START and move the epoch by one, under the
 * owner_seq sequence lock; clears worker_ready first. Only the current
 * writer of the record may call it: the keeper, or a worker without a
 * keeper (standalone, or giving the table up when no keeper is reachable).
 * Returns the new epoch. Full release before the closing (even) seq store.
 *
 * Crash at any store: owner_seq is left odd and the fields are a mix of old
 * and new. hl__owner_read() reports the record as torn; the next writer
 * repairs it first (hl__owner_repair()) and then decides from pid + start
 * time, which can only name a process that exists if both were written, so
 * a torn record never makes a dead worker look alive.
 */
uint64_t hl__owner_write(struct hl_shm_header *h, uint32_t role, uint32_t pid, uint64_t start);

/*
 * Read the record consistently: the four fields belong to one write.
 * Retries (sched_yield) while a write is in progress. Returns 0, or -EBUSY
 * when owner_seq stayed odd or kept moving for 1000 tries (a writer died
 * mid-write): *o then holds the fields as they are, possibly mixed. Never
 * writes the segment: works on a read-only mapping.
 */
int hl__owner_read(const struct hl_shm_header *h, struct hl_owner *o);

/* Test seam inside hl__owner_read() (owner.c): weak, does nothing. */
void hl__owner_read_mid(const struct hl_shm_header *h);

/* Make a torn record's owner_seq even again without changing its fields or
 * the epoch (a living worker must not be fenced by a repair). Returns 1 if
 * it repaired, else 0. Only the record's sole writer calls it, before its
 * own hl__owner_write(): a write over an odd seq would leave it odd. */
int hl__owner_repair(struct hl_shm_header *h);

#endif /* HL_OWNER_H */
