/* SPDX-License-Identifier: MIT */
/*
 * keeper_ask.c: one request to the keeper's control socket and its answer
 * (daemon/common/proto.h), for the commands the keeper carries out itself
 * (heirloomctl snapshot, upgrade). They never touch the segment.
 */
#include "ctl.h"

#include "heirloom/heirloom.h"
#include "proto.h"

#include <stdlib.h>
#include <unistd.h>

int
ctl_keeper_ask(struct ctl *c, const char *sock_opt, const struct hl_msg *m, struct hl_msg *r,
               int timeout_ms, const char *why, const char *after)
{
	char sock[HL_SOCK_PATH_MAX];
	int fd;
	const char *override = sock_opt ? sock_opt : getenv("HEIRLOOM_SOCKET");
	int rc = hl__sock_path(c->name, override, sock, sizeof(sock), NULL);
	if (rc)
		return ctl_fail(c, CTL_USAGE, rc, "control socket path: %s", hl_strerror(rc));
	rc = hl__sock_connect(sock, &fd);
	if (rc)
		return ctl_fail(c, CTL_FAILED, rc,
		                "no keeper at %s (%s): %s; --socket names another", sock,
		                hl_strerror(rc), why);
	rc = hl__msg_send(fd, m, -1);
	if (rc == 0)
		rc = hl__msg_recv(fd, r, NULL, timeout_ms);
	close(fd);
	if (rc)
		return ctl_fail(c, CTL_FAILED, rc, "no answer from the keeper at %s (%s); %s", sock,
		                hl_strerror(rc), after);
	return CTL_OK;
}
