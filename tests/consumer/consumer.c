/* SPDX-License-Identifier: MIT */
/*
 * A program outside the tree that uses an installed libheirloom, as any
 * user's would (tests/consumer/run.sh builds it with CMake's
 * find_package(heirloom) and with pkg-config). It opens a segment that does
 * not exist, which goes through the library's real code (name check, shm
 * open, errors), and prints what it got.
 */
#include <heirloom/heirloom.h>

#include <errno.h>
#include <stdio.h>

int
main(void)
{
	struct hl_client *c = NULL;
	int rc = hl_open("consumer-no-such-segment", NULL, &c);

	printf("heirloom %d.%d.%d: hl_open: %s (%s)\n", HL_VERSION_MAJOR, HL_VERSION_MINOR,
	       HL_VERSION_PATCH, hl_err_name(rc), hl_strerror(rc));
	return rc == -ENOENT && c == NULL ? 0 : 1;
}
