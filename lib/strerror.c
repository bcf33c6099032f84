/* SPDX-License-Identifier: MIT */
/*
 * strerror.c: names and descriptions for every error the API returns: the
 * negative errno range (through glibc's thread-safe strerrordesc_np and
 * strerrorname_np) and our own HL_E* codes below -4095. Never returns NULL.
 */
#include "heirloom/heirloom.h"

#include <string.h>

static const struct {
	int code;
	const char *name;
	const char *desc;
} own[] = {
	{ HL_EBADMAGIC, "HL_EBADMAGIC", "not a heirloom segment (bad magic)" },
	{ HL_EVERSION, "HL_EVERSION",
	  "segment has another layout version (made by another heirloom build): stop its "
	  "daemons, remove it (heirloomctl segment remove --force) and start them again" },
	{ HL_ECORRUPT, "HL_ECORRUPT", "segment is corrupt (a structure failed validation)" },
	{ HL_ENOWORKER, "HL_ENOWORKER", "no worker is serving the table" },
	{ HL_ESTALE, "HL_ESTALE", "this client's endpoint was removed by the worker" },
	{ HL_ETRUNCATED, "HL_ETRUNCATED", "segment is smaller than its header says (truncated)" },
	{ HL_EUNTRUSTED, "HL_EUNTRUSTED",
	  "segment belongs to an owner this process does not trust (see HEIRLOOM_OWNER)" },
	{ HL_ECONFLICT, "HL_ECONFLICT",
	  "the key's revision is not the expected one (compare-and-set conflict)" },
	{ HL_ECOMPACTED, "HL_ECOMPACTED",
	  "the history no longer reaches the start revision (compacted): resume from a later "
	  "revision, or read the current values" },
	{ HL_ENOTDURABLE, "HL_ENOTDURABLE",
	  "applied in memory but not confirmed on disk (the keeper's durability writer failed "
	  "or did not confirm in time; see heirloomctl status)" },
};

const char *
hl_strerror(int err)
{
	if (err == 0)
		return "success";
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (own[i].code == err)
			return own[i].desc;
	if (err < 0 && err > -4096) {
		const char *d = strerrordesc_np(-err);
		if (d)
			return d;
	}
	return "unknown error";
}

const char *
hl_err_name(int err)
{
	if (err == 0)
		return "OK";
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (own[i].code == err)
			return own[i].name;
	if (err < 0 && err > -4096) {
		const char *n = strerrorname_np(-err);
		if (n)
			return n;
	}
	return "EUNKNOWN";
}
