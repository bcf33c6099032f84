/* SPDX-License-Identifier: MIT */
/*
 * telemetry.h: the worker's own statistics and the $sys/telemetry keys
 * (telemetry.c). Calls apply.c and wake.c.
 */
#ifndef HL_W_TELEMETRY_H
#define HL_W_TELEMETRY_H

#include "worker.h"

int hl_w_telemetry_init(struct hl_worker *w);
void hl_w_telemetry_tick(struct hl_worker *w);
int hl_w_telemetry_apply(struct hl_shard *sh);

#endif /* HL_W_TELEMETRY_H */
