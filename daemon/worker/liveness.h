/* SPDX-License-Identifier: MIT */
/*
 * liveness.h: heartbeats at attach, and the systemd watchdog ping and
 * readiness of the worker process (liveness.c, issue 22). Main thread
 * only.
 */
#ifndef HL_W_LIVENESS_H
#define HL_W_LIVENESS_H

#include "worker.h"

void hl_w_beats_reset(struct hl_worker *w);
void hl_w_beats_stop(struct hl_worker *w);
void hl_w_notify_init(void);
/* The main loop's wait in ms: DFLT, or shorter for a short watchdog. */
int hl_w_notify_tick_ms(int dflt);
void hl_w_notify_tick(struct hl_worker *w);

#endif /* HL_W_LIVENESS_H */
