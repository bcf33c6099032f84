/* SPDX-License-Identifier: MIT */
/*
 * trust.h: whose objects a heirloom process may use. /dev/shm and /tmp are
 * writable by every local user, and segments and sockets are found by name,
 * so a process must check who made what it found before it maps or talks
 * to it. One rule for every way in: hl_open(), heirloomctl, the worker
 * taking the table from a keeper (the keeper's peer credentials and the
 * descriptor it passes) and the directories the daemons listen in.
 *
 * The rule. An object (owner uid U, group G, mode M) is trusted when
 *   1. U is root (0) or the calling process's effective uid; or
 *   2. an owner is named (hl_open_opts.expected_owner, else $HEIRLOOM_OWNER)
 *      and U is one of the named users, or G one of the named groups; or
 *   3. no owner is named, U is a system user (U <= HL_SYSTEM_UID_MAX), G is
 *      the caller's effective gid or one of its supplementary groups, and M
 *      does not let others write (no S_IWOTH).
 * Rule 3 is the default deployment (a service running as its own system
 * user, used by the members of its group) with no configuration. It does
 * not accept an ordinary user (uid above HL_SYSTEM_UID_MAX) who shares a
 * group with the caller, such as "users": that is exactly who squats a
 * name. Naming an owner turns rule 3 off: the caller then says whom it
 * expects, and nobody else (but root and itself) is accepted.
 *
 * Nothing here has state; every function may be called from any thread.
 */
#ifndef HL_TRUST_H
#define HL_TRUST_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Highest uid of a system user (Debian's SYS_UID_MAX in login.defs; systemd
 * fixes the same boundary at build time). */
#define HL_SYSTEM_UID_MAX 999u

#define HL_TRUST_MAX 16 /* named users, and named groups, at most */

/* Who the calling process trusts, resolved once (names looked up). */
struct hl_trust {
	uid_t self;
	int named; /* an owner was named: rule 3 is off */
	uid_t uids[HL_TRUST_MAX];
	size_t nuids;
	gid_t gids[HL_TRUST_MAX];
	size_t ngids;
	const char *source; /* "expected_owner", "HEIRLOOM_OWNER" or NULL */
	char spec[128];     /* the named owners as given, for messages */
};

/*
 * Resolve the trust of the calling process: the named owners are SPEC when
 * it is non-NULL and not empty (hl_open_opts.expected_owner), else
 * $HEIRLOOM_OWNER (read with secure_getenv: a set-uid program does not take
 * it from its caller), else none. SPEC is a comma-separated list of
 * entries: "USER" (a user name or a numeric uid; a name that is no user but
 * is a group names the group) or ":GROUP" (a group name or a numeric gid).
 * Returns 0, or -EINVAL when an entry names nobody, there are too many, or
 * the list is too long: a mistake there must not widen or silently narrow
 * whom the caller trusts. On -EINVAL, ERR (ERRLEN bytes, may be NULL) says
 * which entry.
 */
int hl__trust_init(struct hl_trust *t, const char *spec, char *err, size_t errlen);

/* Apply the rule to an object owned by UID:GID with MODE. 0 when trusted,
 * else HL_EUNTRUSTED. */
int hl__trust_owner(const struct hl_trust *t, uid_t uid, gid_t gid, mode_t mode);

/* hl__trust_owner() on what fstat() says of FD; -errno when fstat fails. */
int hl__trust_fd(const struct hl_trust *t, int fd, struct stat *st);

/* One sentence for a refusal: what was found (owner, group, mode of ST)
 * and what T expects, into BUF (always NUL-terminated). */
void hl__trust_explain(const struct hl_trust *t, const struct stat *st, char *buf, size_t len);

/* The user name of UID, else its number, into BUF: for the fix to print
 * ("HEIRLOOM_OWNER=bob"). */
void hl__trust_user_name(uid_t uid, char *buf, size_t len);
/* The group name of GID, else its number, into BUF. */
void hl__trust_group_name(gid_t gid, char *buf, size_t len);

#endif /* HL_TRUST_H */
