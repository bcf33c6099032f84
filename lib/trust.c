/* SPDX-License-Identifier: MIT */
/*
 * trust.c: the owner rule of trust.h: resolving the named owners, deciding
 * whether an object's owner, group and mode are trusted, and saying why
 * not. It decides only: it must never open, map, remove or log anything;
 * each caller reports a refusal in its own words.
 */
#include "trust.h"

#include "heirloom/heirloom.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NSS_BUF 4096 /* enough for one passwd or group entry without members */

static int
parse_id(const char *s, unsigned long *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v >= (unsigned long)(uid_t)-1)
		return -1;
	*out = v;
	return 0;
}

static int
lookup_user(const char *name, uid_t *uid)
{
	struct passwd pw, *res = NULL;
	char buf[NSS_BUF];
	unsigned long v;
	if (parse_id(name, &v) == 0) {
		*uid = (uid_t)v;
		return 0;
	}
	if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return -1;
	*uid = res->pw_uid;
	return 0;
}

static int
lookup_group(const char *name, gid_t *gid)
{
	struct group gr, *res = NULL;
	char *buf = malloc((size_t)64 * 1024); /* a group entry lists its members */
	unsigned long v;
	int rc = -1;
	if (parse_id(name, &v) == 0) {
		*gid = (gid_t)v;
		rc = 0;
	} else if (buf && getgrnam_r(name, &gr, buf, (size_t)64 * 1024, &res) == 0 && res) {
		*gid = res->gr_gid;
		rc = 0;
	}
	free(buf);
	return rc;
}

static int
add_entry(struct hl_trust *t, const char *e)
{
	if (e[0] == ':') {
		if (t->ngids == HL_TRUST_MAX || lookup_group(e + 1, &t->gids[t->ngids]))
			return -1;
		t->ngids++;
		return 0;
	}
	if (t->nuids < HL_TRUST_MAX && lookup_user(e, &t->uids[t->nuids]) == 0) {
		t->nuids++;
		return 0;
	}
	if (t->ngids < HL_TRUST_MAX && lookup_group(e, &t->gids[t->ngids]) == 0) {
		t->ngids++;
		return 0;
	}
	return -1;
}

int
hl__trust_init(struct hl_trust *t, const char *spec, char *err, size_t errlen)
{
	char list[sizeof(t->spec)];
	memset(t, 0, sizeof(*t));
	t->self = geteuid();
	if (spec && *spec) {
		t->source = "expected_owner";
	} else {
		spec = secure_getenv("HEIRLOOM_OWNER");
		t->source = "HEIRLOOM_OWNER";
	}
	if (!spec || !*spec) {
		t->source = NULL;
		return 0;
	}
	if (strlen(spec) >= sizeof(list)) {
		if (err)
			snprintf(err, errlen, "%s is longer than %zu bytes", t->source,
			         sizeof(list) - 1);
		return -EINVAL;
	}
	strcpy(t->spec, spec);
	strcpy(list, spec);
	t->named = 1;
	char *save = NULL;
	for (char *e = strtok_r(list, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
		if (add_entry(t, e) < 0) {
			if (err)
				snprintf(err, errlen,
				         "%s=%s: '%s' is no user or group (or more than %d of "
				         "either)",
				         t->source, t->spec, e, HL_TRUST_MAX);
			return -EINVAL;
		}
	}
	if (t->nuids + t->ngids == 0) {
		if (err)
			snprintf(err, errlen, "%s=%s names nobody", t->source, t->spec);
		return -EINVAL;
	}
	return 0;
}

/* GID is the effective gid or a supplementary group of this process. */
static int
in_my_groups(gid_t gid)
{
	if (gid == getegid())
		return 1;
	int n = getgroups(0, NULL);
	if (n <= 0)
		return 0;
	gid_t *g = malloc((size_t)n * sizeof(*g));
	if (!g)
		return 0; /* refuse rather than guess */
	n = getgroups(n, g);
	int found = 0;
	for (int i = 0; i < n && !found; i++)
		found = g[i] == gid;
	free(g);
	return found;
}

int
hl__trust_owner(const struct hl_trust *t, uid_t uid, gid_t gid, mode_t mode)
{
	if (uid == 0 || uid == t->self)
		return 0;
	if (t->named) {
		for (size_t i = 0; i < t->nuids; i++)
			if (t->uids[i] == uid)
				return 0;
		for (size_t i = 0; i < t->ngids; i++)
			if (t->gids[i] == gid)
				return 0;
		return HL_EUNTRUSTED;
	}
	if (uid <= HL_SYSTEM_UID_MAX && !(mode & S_IWOTH) && in_my_groups(gid))
		return 0;
	return HL_EUNTRUSTED;
}

int
hl__trust_fd(const struct hl_trust *t, int fd, struct stat *st)
{
	if (fstat(fd, st) < 0)
		return -errno;
	return hl__trust_owner(t, st->st_uid, st->st_gid, st->st_mode);
}

void
hl__trust_user_name(uid_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char nss[NSS_BUF];
	if (getpwuid_r(uid, &pw, nss, sizeof(nss), &res) == 0 && res)
		snprintf(buf, len, "%s", res->pw_name);
	else
		snprintf(buf, len, "%u", (unsigned)uid);
}

void
hl__trust_group_name(gid_t gid, char *buf, size_t len)
{
	struct group gr, *res = NULL;
	char *nss = malloc((size_t)64 * 1024);
	if (nss && getgrgid_r(gid, &gr, nss, (size_t)64 * 1024, &res) == 0 && res)
		snprintf(buf, len, "%s", res->gr_name);
	else
		snprintf(buf, len, "%u", (unsigned)gid);
	free(nss);
}

/* "uid 1001 (bob)", or "uid 1001" when it has no name. */
static void
id_text(const char *what, unsigned id, const char *name, char *buf, size_t len)
{
	char num[16];
	snprintf(num, sizeof(num), "%u", id);
	if (strcmp(num, name) == 0)
		snprintf(buf, len, "%s %u", what, id);
	else
		snprintf(buf, len, "%s %u (%s)", what, id, name);
}

void
hl__trust_explain(const struct hl_trust *t, const struct stat *st, char *buf, size_t len)
{
	char name[64], user[96], group[96], me[96];
	hl__trust_user_name(st->st_uid, name, sizeof(name));
	id_text("uid", (unsigned)st->st_uid, name, user, sizeof(user));
	hl__trust_group_name(st->st_gid, name, sizeof(name));
	id_text("group", (unsigned)st->st_gid, name, group, sizeof(group));
	hl__trust_user_name(t->self, name, sizeof(name));
	id_text("uid", (unsigned)t->self, name, me, sizeof(me));
	if (t->named)
		snprintf(buf, len,
		         "owned by %s, %s, mode %04o; expected root, %s (this process) or "
		         "%s=%s",
		         user, group, (unsigned)(st->st_mode & 07777), me, t->source, t->spec);
	else
		snprintf(buf, len,
		         "owned by %s, %s, mode %04o; expected root, %s (this process), or a "
		         "system user (uid <= %u) with one of this process's groups and no "
		         "write permission for others",
		         user, group, (unsigned)(st->st_mode & 07777), me, HL_SYSTEM_UID_MAX);
}
