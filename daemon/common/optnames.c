/* SPDX-License-Identifier: MIT */
/*
 * optnames.c: every option name of heirloom-keeper and heirloom-worker
 * (config.h, hl__daemon_option_names), so that each daemon can skip the
 * other's options in the config file's shared sections and still fail on
 * a misspelt one. A name added to a daemon's table and not here stops that
 * daemon at its first start; test_config fails on a name here that no
 * daemon has.
 */
#include "config.h"

#include <stddef.h>

const char *const hl__daemon_option_names[] = {
	/* both */
	"socket", "mode", "shards", "max-keys", "max-observers", "max-endpoints", "max-value",
	"heap", "req-ring", "ev-ring", "history", "print-config", "log-level", "log-format",
	/* heirloom-keeper */
	"spawn-worker", "worker-args", "group", "foreground", "stop-timeout", "restart-stable",
	"restart-min", "restart-max", "hang-timeout", "durability", "state-dir",
	"snapshot-interval", "compact-size",
	/* heirloom-worker */
	"standalone", "prune-interval", "slow-reader-ms", "telemetry-interval", "spin-us",
	"busy-poll", "crash-at-step", "recovery-pause", "park-shard", "hold-dispatch-shard",
	"hold-dispatch-file", NULL
};
