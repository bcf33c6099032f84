/* SPDX-License-Identifier: MIT */
/*
 * cmd_segment.c: heirloomctl segment inspect | remove: the object itself,
 * for segments that cannot be used (left by another layout version, a
 * crash during creation, or a crash of both daemons).
 *
 * It never maps the object: the header is copied out with pread() and only
 * the copy is read, and only the fields that validation got far enough to
 * vouch for are shown, so any bytes at all give a report, never a crash.
 * remove refuses without --force, and while the header records a keeper or
 * worker that still runs unless --force-live.
 */
#include "ctl.h"
#include "out.h"
#include "trust.h"
#include "view.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct raw {
	struct hl_shm_header h; /* a private copy; zero past the object's end */
	uint64_t file_size;
	size_t got;     /* bytes of the header that exist */
	int verdict;    /* hl__seg_validate() */
	struct stat st; /* the object's owner, group and mode */
	int trust;      /* hl__trust_owner(): 0 or HL_EUNTRUSTED */
	int magic_ok;   /* the identity fields can be read */
	int version_ok; /* ... and the rest is laid out as in this build */
};

static int
read_raw(const char *name, struct raw *r)
{
	int fd, rc = hl__seg_open_fd(name, 0, &fd);
	if (rc)
		return rc;
	struct stat st;
	memset(r, 0, sizeof(*r));
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	r->file_size = (uint64_t)st.st_size;
	r->st = st;
	struct hl_trust t;
	r->trust = hl__trust_init(&t, NULL, NULL, 0)
	                   ? HL_EUNTRUSTED
	                   : hl__trust_owner(&t, st.st_uid, st.st_gid, st.st_mode);
	ssize_t n = pread(fd, &r->h, sizeof(r->h), 0);
	rc = n < 0 ? -errno : 0;
	close(fd);
	if (rc)
		return rc;
	r->got = (size_t)n;
	r->verdict = hl__seg_validate(&r->h, r->file_size);
	r->magic_ok = r->got >= sizeof(r->h.magic) && r->h.magic == HL_MAGIC;
	r->version_ok = r->magic_ok && r->got == sizeof(r->h) &&
	                r->h.version == HL_LAYOUT_VERSION && r->h.header_size == sizeof(r->h) &&
	                r->h.format == hl__layout_format();
	return 0;
}

static void
hex_field(struct out *o, const char *name, uint64_t v)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "0x%016llx", (unsigned long long)v);
	out_str(o, name, buf);
}

static void
write_header(struct out *o, const struct raw *r)
{
	const struct hl_shm_header *h = &r->h;
	out_u64(o, "size", h->size);
	out_time(o, "created", h->created_ns);
	ctl_write_capacities(o, h);
	out_obj_begin(o, "offsets");
	out_u64(o, "buckets", h->buckets_off);
	out_u64(o, "keys", h->keys_off);
	out_u64(o, "observers", h->observers_off);
	out_u64(o, "heap", h->heap_off);
	out_u64(o, "endpoints_worker", h->ep_worker_off);
	out_u64(o, "claims", h->claims_off);
	out_u64(o, "endpoints_client", h->ep_client_off);
	out_obj_end(o);
	uint32_t role = atomic_load_explicit(&h->owner_role, memory_order_relaxed);
	uint32_t pid = atomic_load_explicit(&h->owner_pid, memory_order_relaxed);
	uint64_t start = atomic_load_explicit(&h->owner_start, memory_order_relaxed);
	uint32_t kpid = atomic_load_explicit(&h->keeper_pid, memory_order_relaxed);
	uint64_t kstart = atomic_load_explicit(&h->keeper_start, memory_order_relaxed);
	out_obj_begin(o, "owner");
	out_str(o, "role", view_role_name(role));
	out_u64(o, "pid", pid);
	out_bool(o, "alive", role != HL_ROLE_NONE && view_pid_alive(pid, start));
	out_u64(o, "epoch", atomic_load_explicit(&h->owner_epoch, memory_order_relaxed));
	out_obj_end(o);
	out_obj_begin(o, "keeper");
	out_u64(o, "pid", kpid);
	out_bool(o, "alive", view_pid_alive(kpid, kstart));
	out_obj_end(o);
	out_bool(o, "worker_ready", atomic_load_explicit(&h->worker_ready, memory_order_relaxed));
}

static int
inspect(struct ctl *c)
{
	struct raw r;
	int rc = read_raw(c->name, &r);
	if (rc)
		return ctl_fail_segment(c, rc);
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm/heirloom.%s", c->name);
	struct out o;
	out_init(&o, stdout, c->json);
	out_obj_begin(&o, NULL);
	out_str(&o, "name", c->name);
	out_str(&o, "path", path);
	out_u64(&o, "file_size", r.file_size);
	/* Inspect reads a private copy and never maps: it is how one looks at
	 * a segment that the owner rule refuses (lib/trust.h). */
	out_obj_begin(&o, "object");
	out_u64(&o, "uid", r.st.st_uid);
	out_u64(&o, "gid", r.st.st_gid);
	char mode[8];
	snprintf(mode, sizeof(mode), "%04o", (unsigned)(r.st.st_mode & 07777));
	out_str(&o, "mode", mode);
	out_bool(&o, "owner_trusted", r.trust == 0);
	out_obj_end(&o);
	out_obj_begin(&o, "validation");
	out_bool(&o, "usable", r.verdict == 0);
	out_str(&o, "result", hl_err_name(r.verdict));
	out_str(&o, "message", hl_strerror(r.verdict));
	out_obj_end(&o);
	out_obj_begin(&o, "header");
	if (r.got >= sizeof(r.h.magic)) {
		hex_field(&o, "magic", r.h.magic);
		out_bool(&o, "magic_ok", r.magic_ok);
	}
	if (!r.magic_ok && r.got) {
		/* Not ours: its bytes mean nothing to us, show the first few. */
		out_bytes(&o, "first_bytes", &r.h, r.got < 16 ? r.got : 16);
	}
	/* The identity fields sit at the same place in every layout version;
	 * show those the object is long enough to hold. */
	if (r.magic_ok && r.got >= offsetof(struct hl_shm_header, header_size) + 4) {
		out_u64(&o, "layout_version", r.h.version);
		out_u64(&o, "expected_layout_version", HL_LAYOUT_VERSION);
		out_u64(&o, "header_size", r.h.header_size);
		out_u64(&o, "expected_header_size", sizeof(r.h));
	}
	if (r.magic_ok && r.got >= offsetof(struct hl_shm_header, format) + 8) {
		hex_field(&o, "format", r.h.format);
		hex_field(&o, "expected_format", hl__layout_format());
	}
	if (r.version_ok)
		write_header(&o, &r);
	out_obj_end(&o);
	out_obj_end(&o);
	if (out_finish(&o))
		return CTL_FAILED;
	if (r.trust)
		fprintf(stderr,
		        "heirloomctl: segment inspect: segment '%s' belongs to uid %u, an owner "
		        "you do not trust: the other commands refuse it (see HEIRLOOM_OWNER)\n",
		        c->name, (unsigned)r.st.st_uid);
	if (r.verdict == 0)
		return CTL_OK;
	/* The report above is the JSON answer; stderr still gets the line. */
	fprintf(stderr, "heirloomctl: segment inspect: segment '%s' is not usable: %s\n", c->name,
	        hl_strerror(r.verdict));
	return CTL_SEGMENT;
}

static int
remove_segment(struct ctl *c, const struct ctl_args *a)
{
	if (!a->set[SEGMENT_FORCE])
		return ctl_fail(c, CTL_USAGE, 0,
		                "refusing to remove segment '%s' without --force (every process "
		                "using it loses it)",
		                c->name);
	struct raw r;
	int rc = read_raw(c->name, &r);
	if (rc)
		return ctl_fail_segment(c, rc);
	if (r.version_ok) {
		const struct hl_shm_header *h = &r.h;
		uint32_t role = atomic_load_explicit(&h->owner_role, memory_order_relaxed);
		uint32_t pid = atomic_load_explicit(&h->owner_pid, memory_order_relaxed);
		uint64_t start = atomic_load_explicit(&h->owner_start, memory_order_relaxed);
		uint32_t kpid = atomic_load_explicit(&h->keeper_pid, memory_order_relaxed);
		uint64_t kstart = atomic_load_explicit(&h->keeper_start, memory_order_relaxed);
		const char *who = NULL;
		uint32_t live = 0;
		if (role != HL_ROLE_NONE && view_pid_alive(pid, start))
			who = view_role_name(role), live = pid;
		else if (view_pid_alive(kpid, kstart))
			who = "keeper", live = kpid;
		if (who && !a->set[SEGMENT_FORCE_LIVE])
			return ctl_fail(
			        c, CTL_FAILED, -EBUSY,
			        "segment '%s' is in use by %s pid %u, which is running; stop "
			        "it first, or add --force-live",
			        c->name, who, live);
	} else if (r.magic_ok) {
		fprintf(stderr,
		        "heirloomctl: segment remove: segment '%s' (%s) has no owner record "
		        "this build can read; removing it anyway (--force)\n",
		        c->name, hl_strerror(r.verdict));
	}
	rc = hl__seg_unlink(c->name);
	if (rc == -ENOENT)
		return ctl_fail_segment(c, rc);
	if (rc)
		return ctl_fail(c, CTL_FAILED, rc, "cannot remove segment '%s': %s", c->name,
		                hl_strerror(rc));
	struct out o;
	out_init(&o, stdout, c->json);
	out_obj_begin(&o, NULL);
	out_str(&o, "removed", c->name);
	out_str(&o, "was", hl_err_name(r.verdict));
	out_obj_end(&o);
	return out_finish(&o) ? CTL_FAILED : CTL_OK;
}

int
ctl_cmd_segment(struct ctl *c, const struct ctl_args *a)
{
	const char *sub = a->pos[0];
	if (strcmp(sub, "inspect") == 0) {
		c->cmd = "segment inspect";
		if (a->set[SEGMENT_FORCE] || a->set[SEGMENT_FORCE_LIVE])
			return ctl_fail(c, CTL_USAGE, 0,
			                "--force applies to 'segment remove' only");
		return inspect(c);
	}
	if (strcmp(sub, "remove") == 0) {
		c->cmd = "segment remove";
		return remove_segment(c, a);
	}
	return ctl_fail(c, CTL_USAGE, 0, "unknown subcommand '%s': inspect or remove", sub);
}
