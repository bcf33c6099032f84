/* SPDX-License-Identifier: MIT */
/*
 * cmd_snapshot.c: heirloomctl snapshot: ask the keeper (its control
 * socket, daemon/common/proto.h) to write a snapshot of the table to its
 * state directory now, and wait until it is on disk. The keeper's writer
 * thread does the work (daemon/keeper/durable.c); this command never
 * touches the segment or the files.
 */
#include "ctl.h"

#include "heirloom/heirloom.h"
#include "out.h"
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
ctl_cmd_snapshot(struct ctl *c, const struct ctl_args *a)
{
	uint64_t timeout_ms = 600000;
	struct hl_msg m, r;
	int rc;

	if (a->set[SNAPSHOT_TIMEOUT] &&
	    ctl_parse_u64(a->val[SNAPSHOT_TIMEOUT], 1, 86400000, &timeout_ms) < 0)
		return ctl_fail(c, CTL_USAGE, 0, "--timeout: milliseconds, 1 to 86400000");
	hl__msg_init(&m, HL_MSG_SNAPSHOT);
	rc = ctl_keeper_ask(c, a->set[SNAPSHOT_SOCKET] ? a->val[SNAPSHOT_SOCKET] : NULL, &m, &r,
	                    (int)timeout_ms, "snapshots are written by the keeper",
	                    "the snapshot may still be written ('heirloomctl status' shows the "
	                    "last one)");
	if (rc != CTL_OK)
		return rc;
	if (r.type != HL_MSG_OK)
		return ctl_fail(c, CTL_REFUSED, r.code, "%s", hl__msg_text(&r));
	struct out o;
	out_init(&o, stdout, c->json);
	out_obj_begin(&o, NULL);
	out_str(&o, "result", "written");
	out_u64(&o, "revision", r.epoch);
	out_str(&o, "message", hl__msg_text(&r));
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}
