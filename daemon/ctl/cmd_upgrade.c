/* SPDX-License-Identifier: MIT */
/*
 * cmd_upgrade.c: heirloomctl upgrade: ask the keeper (its control socket,
 * daemon/common/proto.h) to replace the serving worker with a new binary
 * and wait for the outcome. It never touches the segment or the worker
 * itself: the keeper runs the upgrade (daemon/keeper/upgrade.c) and it
 * goes on, or rolls back, even if this command is interrupted.
 */
#include "ctl.h"

#include "heirloom/heirloom.h"
#include "out.h"
#include "proto.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
ctl_cmd_upgrade(struct ctl *c, const struct ctl_args *a)
{
	char path[PATH_MAX] = "";
	uint64_t timeout_ms = 10000;
	struct hl_msg m, r;
	int rc;

	if (a->set[UPGRADE_TIMEOUT] &&
	    ctl_parse_u64(a->val[UPGRADE_TIMEOUT], 1, 3600000, &timeout_ms) < 0)
		return ctl_fail(c, CTL_USAGE, 0, "--timeout: milliseconds, 1 to 3600000");
	if (a->set[UPGRADE_WORKER]) {
		/* The keeper runs it from its own directory: make it absolute. */
		if (!realpath(a->val[UPGRADE_WORKER], path))
			return ctl_fail(c, CTL_USAGE, -errno, "--worker %s: %s",
			                a->val[UPGRADE_WORKER], strerror(errno));
		if (strlen(path) >= sizeof(m.text))
			return ctl_fail(c, CTL_USAGE, -ENAMETOOLONG,
			                "--worker: the path must be under %zu bytes: %s",
			                sizeof(m.text), path);
	}
	hl__msg_init(&m, HL_MSG_UPGRADE);
	m.epoch = timeout_ms;
	snprintf(m.text, sizeof(m.text), "%s", path);
	/* The keeper answers when the new worker serves or the old binary
	 * serves again: up to a timeout to start, one to hand over, one to
	 * recover, and the rollback's own recovery. */
	rc = ctl_keeper_ask(c, a->set[UPGRADE_SOCKET] ? a->val[UPGRADE_SOCKET] : NULL, &m, &r,
	                    (int)(timeout_ms * 4 + 30000),
	                    "an upgrade goes through the keeper that supervises the worker "
	                    "(--spawn-worker)",
	                    "'heirloomctl status' shows who serves");
	if (rc != CTL_OK)
		return rc;
	if (r.type == HL_MSG_OK) {
		struct out o;
		out_init(&o, stdout, c->json);
		out_obj_begin(&o, NULL);
		out_str(&o, "result", "upgraded");
		out_u64(&o, "epoch", r.epoch);
		out_str(&o, "message", hl__msg_text(&r));
		return out_finish(&o) ? CTL_FAILED : CTL_OK;
	}
	if (r.code == -ECANCELED || r.code == -ESHUTDOWN)
		return ctl_fail(c, CTL_ROLLBACK, r.code, "rolled back: %s", hl__msg_text(&r));
	return ctl_fail(c, CTL_REFUSED, r.code, "refused, nothing changed: %s", hl__msg_text(&r));
}
