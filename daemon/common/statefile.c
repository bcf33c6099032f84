/* SPDX-License-Identifier: MIT */
/*
 * statefile.c: the state directory's files (statefile.h). Owns their byte
 * format and the order of every write, fsync and rename; must never touch
 * the segment or decide policy (when to snapshot: daemon/keeper/durable.c;
 * what a record does to the table: daemon/worker/restore.c).
 */
#include "statefile.h"

#include "heirloom/heirloom.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <isa-l/crc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAP_MAGIC "HLSNAP\r\n"
#define LOG_MAGIC  "HLLOG\r\n\0"
#define KIND_SNAP  1u
#define KIND_LOG   2u
#define REC_MAX    (64u << 20) /* no record is near this: a length past it is garbage */
#define TORN_MAX   (16u << 20) /* more than any one append (a group commit) writes */

/* A file's header: 40 bytes, crc over the 36 before it. */
struct sf_head {
	char magic[8];
	uint32_t version; /* HL_SF_VERSION */
	uint32_t kind;    /* KIND_SNAP / KIND_LOG */
	uint64_t seq;     /* log: its sequence; snapshot: the first log to replay */
	uint64_t created_ns;
	uint32_t pad;
	uint32_t crc;
};
_Static_assert(sizeof(struct sf_head) == 40, "state file header");

/* Before each body. */
struct sf_rh {
	uint32_t len; /* body bytes */
	uint32_t crc; /* CRC-32C of the body */
};

/* A body: this, then key, meta and value bytes. */
struct sf_body {
	uint16_t type; /* enum hl_sf_type */
	uint16_t key_len;
	uint16_t meta_len;
	uint16_t pad;
	uint32_t val_len;
	uint32_t chain; /* END: CRC over every record's CRC before it */
	uint64_t rev;   /* END: the table's revision */
	uint64_t count; /* END: records before it */
};
_Static_assert(sizeof(struct sf_body) == 32, "state record body");

uint32_t
hl__crc32c(uint32_t crc, const void *p, size_t n)
{
	/* crc32_iscsi() takes an int length: feed it in pieces. */
	const unsigned char *b = p;
	while (n) {
		int m = n > (1u << 30) ? (1 << 30) : (int)n;
		crc = crc32_iscsi((unsigned char *)(uintptr_t)b, m, crc);
		b += m;
		n -= (size_t)m;
	}
	return crc;
}

static uint64_t
wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int
reserve(struct hl_sf_writer *w, size_t n)
{
	if (w->len + n <= w->cap)
		return 0;
	size_t cap = w->cap ? w->cap : 1u << 16;
	while (cap < w->len + n)
		cap *= 2;
	uint8_t *b = realloc(w->buf, cap);
	if (!b)
		return -ENOMEM;
	w->buf = b;
	w->cap = cap;
	return 0;
}

static int
put_body(struct hl_sf_writer *w, const struct sf_body *b, const struct hl_sf_rec *r)
{
	uint32_t len = (uint32_t)sizeof(*b) + r->key_len + r->meta_len + r->val_len;
	int rc = reserve(w, sizeof(struct sf_rh) + len);
	if (rc)
		return rc;
	uint8_t *p = w->buf + w->len + sizeof(struct sf_rh);
	memcpy(p, b, sizeof(*b));
	size_t at = sizeof(*b);
	if (r->key_len)
		memcpy(p + at, r->key, r->key_len);
	at += r->key_len;
	if (r->meta_len)
		memcpy(p + at, r->meta, r->meta_len);
	at += r->meta_len;
	if (r->val_len)
		memcpy(p + at, r->val, r->val_len);
	struct sf_rh h = { .len = len, .crc = hl__crc32c(0, p, len) };
	memcpy(w->buf + w->len, &h, sizeof(h));
	w->chain = hl__crc32c(w->chain, &h.crc, sizeof(h.crc));
	w->len += sizeof(h) + len;
	w->bytes += sizeof(h) + len;
	w->count++;
	return 0;
}

int
hl__sf_put(struct hl_sf_writer *w, const struct hl_sf_rec *r)
{
	struct sf_body b = { .type = r->type,
		             .key_len = (uint16_t)r->key_len,
		             .meta_len = (uint16_t)r->meta_len,
		             .val_len = r->val_len,
		             .rev = r->rev };
	return put_body(w, &b, r);
}

int
hl__sf_flush(struct hl_sf_writer *w)
{
	size_t done = 0;
	while (done < w->len) {
		ssize_t n = write(w->fd, w->buf + done, w->len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n < 0 ? -errno : -EIO;
			/* Keep what was not written: the caller gives up the file. */
			memmove(w->buf, w->buf + done, w->len - done);
			w->len -= done;
			w->off += done;
			return rc;
		}
		done += (size_t)n;
	}
	w->off += done;
	w->len = 0;
	return 0;
}

void
hl__sf_close(struct hl_sf_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	free(w->buf);
	*w = (struct hl_sf_writer){ .fd = -1 };
}

static int
fsync_dir(int dirfd)
{
	return fsync(dirfd) < 0 ? -errno : 0;
}

static int
open_new(struct hl_sf_writer *w, int dirfd, const char *name, uint32_t kind, uint64_t seq)
{
	*w = (struct hl_sf_writer){ .fd = -1 };
	/* The directory's mode rules who reads it; files are never wider than
	 * the directory's group (the umask of the keeper applies too). */
	w->fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0660);
	if (w->fd < 0)
		return -errno;
	struct sf_head h = {
		.version = HL_SF_VERSION, .kind = kind, .seq = seq, .created_ns = wall_ns()
	};
	memcpy(h.magic, kind == KIND_SNAP ? SNAP_MAGIC : LOG_MAGIC, sizeof(h.magic));
	h.crc = hl__crc32c(0, &h, offsetof(struct sf_head, crc));
	int rc = reserve(w, sizeof(h));
	if (rc == 0) {
		memcpy(w->buf, &h, sizeof(h));
		w->len = sizeof(h);
		rc = hl__sf_flush(w);
	}
	if (rc) {
		hl__sf_close(w);
		unlinkat(dirfd, name, 0);
	}
	return rc;
}

int
hl__sf_snap_begin(struct hl_sf_writer *w, int dirfd, uint64_t log_seq)
{
	return open_new(w, dirfd, "snapshot.tmp", KIND_SNAP, log_seq);
}

void
hl__sf_snap_abort(struct hl_sf_writer *w, int dirfd)
{
	hl__sf_close(w);
	unlinkat(dirfd, "snapshot.tmp", 0);
}

int
hl__sf_snap_commit(struct hl_sf_writer *w, int dirfd, uint64_t revision)
{
	struct sf_body b = {
		.type = HL_SF_END, .chain = w->chain, .rev = revision, .count = w->count
	};
	struct hl_sf_rec none = { 0 };
	int rc = put_body(w, &b, &none);
	if (rc == 0)
		rc = hl__sf_flush(w);
	/* The order that makes a crash at any point harmless: the new file
	 * is whole on disk before its name replaces the old one, and the
	 * rename is on disk before anything relies on it. */
	if (rc == 0 && fsync(w->fd) < 0)
		rc = -errno;
	if (rc == 0 && renameat(dirfd, "snapshot.tmp", dirfd, "snapshot") < 0)
		rc = -errno;
	if (rc == 0)
		rc = fsync_dir(dirfd);
	if (rc)
		hl__sf_snap_abort(w, dirfd);
	else
		hl__sf_close(w);
	return rc;
}

int
hl__sf_log_create(struct hl_sf_writer *w, int dirfd, uint64_t seq)
{
	char name[32];
	snprintf(name, sizeof(name), "log.%016" PRIx64, seq);
	int rc = open_new(w, dirfd, name, KIND_LOG, seq);
	if (rc)
		return rc; /* nothing left open */
	if (fdatasync(w->fd) < 0)
		rc = -errno;
	if (rc == 0)
		rc = fsync_dir(dirfd);
	if (rc) {
		hl__sf_close(w);
		unlinkat(dirfd, name, 0);
	}
	return rc;
}

int
hl__sf_log_sync(struct hl_sf_writer *w)
{
	int rc = hl__sf_flush(w);
	if (rc == 0 && fdatasync(w->fd) < 0)
		rc = -errno;
	return rc;
}

static int
log_seq_of(const char *name, uint64_t *seq)
{
	if (strncmp(name, "log.", 4) != 0 || strlen(name) != 20)
		return 0;
	char *end;
	*seq = strtoull(name + 4, &end, 16);
	return *end == 0;
}

void
hl__sf_prune(int dirfd, uint64_t below)
{
	int fd = dup(dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *e;
	uint64_t seq;
	while ((e = readdir(d)) != NULL)
		if ((log_seq_of(e->d_name, &seq) && seq < below) ||
		    strcmp(e->d_name, "snapshot.tmp") == 0)
			unlinkat(dirfd, e->d_name, 0);
	closedir(d);
	fsync_dir(dirfd);
}

/* ---- reading ---- */

struct sf_file {
	char name[256];
	uint64_t seq;
	const uint8_t *p;
	size_t size;
	size_t end; /* log: bytes up to the last good record */
};

static int
cmp_seq(const void *a, const void *b)
{
	const struct sf_file *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int
map_file(int dirfd, struct sf_file *f)
{
	int fd = openat(dirfd, f->name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) < 0)
		rc = -errno;
	f->size = rc ? 0 : (size_t)st.st_size;
	f->p = NULL;
	if (rc == 0 && f->size) {
		void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED)
			rc = -errno;
		else
			f->p = m;
	}
	close(fd);
	return rc;
}

static int
check_head(const struct sf_file *f, uint32_t kind, uint64_t *seq, char *err, size_t errlen)
{
	struct sf_head h;
	if (!f->p || f->size < sizeof(h)) {
		snprintf(err, errlen, "%s: shorter than its header (%zu bytes)", f->name, f->size);
		return HL_ECORRUPT;
	}
	memcpy(&h, f->p, sizeof(h));
	if (memcmp(h.magic, kind == KIND_SNAP ? SNAP_MAGIC : LOG_MAGIC, sizeof(h.magic)) != 0 ||
	    h.kind != kind) {
		snprintf(err, errlen, "%s: not a heirloom %s file (bad magic)", f->name,
		         kind == KIND_SNAP ? "snapshot" : "log");
		return HL_ECORRUPT;
	}
	if (h.crc != hl__crc32c(0, &h, offsetof(struct sf_head, crc))) {
		snprintf(err, errlen, "%s: header checksum mismatch", f->name);
		return HL_ECORRUPT;
	}
	if (h.version != HL_SF_VERSION) {
		snprintf(err, errlen, "%s: format version %u, this build reads %u", f->name,
		         h.version, HL_SF_VERSION);
		return HL_EVERSION;
	}
	*seq = h.seq;
	return 0;
}

/* The record at OFF of F: 1 and *b, *len filled; 0 at the exact end; -1
 * cut short by the end of the file; -2 a bad length or CRC. */
static int
rec_at(const struct sf_file *f, size_t off, struct sf_body *b, uint32_t *len, uint32_t *crc)
{
	if (off == f->size)
		return 0;
	struct sf_rh h;
	if (f->size - off < sizeof(h))
		return -1;
	memcpy(&h, f->p + off, sizeof(h));
	if (h.len < sizeof(*b) || h.len > REC_MAX)
		return -2;
	if (f->size - off - sizeof(h) < h.len)
		return -1;
	const uint8_t *body = f->p + off + sizeof(h);
	if (hl__crc32c(0, body, h.len) != h.crc)
		return -2;
	memcpy(b, body, sizeof(*b));
	if ((uint64_t)sizeof(*b) + b->key_len + b->meta_len + b->val_len != h.len)
		return -2;
	*len = h.len;
	*crc = h.crc;
	return 1;
}

static int
all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static int
check_snapshot(struct sf_file *f, struct hl_sf_info *info, char *err, size_t errlen)
{
	uint64_t seq;
	int rc = check_head(f, KIND_SNAP, &seq, err, errlen);
	if (rc)
		return rc;
	size_t off = sizeof(struct sf_head);
	uint64_t count = 0;
	uint32_t chain = 0;
	for (;;) {
		struct sf_body b;
		uint32_t len, crc;
		int r = rec_at(f, off, &b, &len, &crc);
		if (r <= 0) {
			snprintf(err, errlen,
			         "snapshot: %s at byte %zu (record %" PRIu64 "); refusing it whole",
			         r == 0    ? "ends without its END record"
			         : r == -1 ? "cut short"
			                   : "checksum or length mismatch",
			         off, count);
			return HL_ECORRUPT;
		}
		if (b.type == HL_SF_END) {
			if (off + sizeof(struct sf_rh) + len != f->size || b.count != count ||
			    b.chain != chain) {
				snprintf(err, errlen,
				         "snapshot: END record at byte %zu does not match the "
				         "records before it; refusing it whole",
				         off);
				return HL_ECORRUPT;
			}
			info->have_snapshot = 1;
			info->snap_records = count;
			info->snap_log_seq = seq;
			if (b.rev > info->revision)
				info->revision = b.rev;
			f->end = f->size;
			return 0;
		}
		if (b.type != HL_SF_PUT || b.key_len == 0 || b.key_len > HL_KEY_MAX ||
		    b.meta_len > HL_META_MAX) {
			snprintf(err, errlen, "snapshot: bad record at byte %zu; refusing it whole",
			         off);
			return HL_ECORRUPT;
		}
		if (b.rev > info->revision)
			info->revision = b.rev;
		chain = hl__crc32c(chain, &crc, sizeof(crc));
		count++;
		off += sizeof(struct sf_rh) + len;
	}
}

static int
check_log(struct sf_file *f, struct hl_sf_info *info, char *err, size_t errlen)
{
	uint64_t seq;
	int rc = check_head(f, KIND_LOG, &seq, err, errlen);
	if (rc == HL_ECORRUPT && f->size <= sizeof(struct sf_head)) {
		/* A log whose header is cut short: created by a keeper killed
		 * before the header was written (the next keeper then began
		 * the next log). It never held a record. */
		info->torn++;
		f->end = sizeof(struct sf_head); /* replay() reads nothing */
		return 0;
	}
	if (rc)
		return rc;
	if (seq != f->seq) {
		snprintf(err, errlen, "%s: its header says sequence %" PRIu64, f->name, seq);
		return HL_ECORRUPT;
	}
	size_t off = sizeof(struct sf_head);
	for (;;) {
		struct sf_body b;
		uint32_t len, crc;
		int r = rec_at(f, off, &b, &len, &crc);
		if (r == 0)
			break;
		if (r < 0) {
			/* Torn: cut by the end of the file, the file's last
			 * record, or zeros to the end (pages allocated, not
			 * written). Anything after it means corruption. */
			struct sf_rh h;
			size_t rest = f->size - off;
			int last = rest < sizeof(h);
			if (!last) {
				memcpy(&h, f->p + off, sizeof(h));
				last = (uint64_t)h.len + sizeof(h) >= rest;
			}
			/* One group commit writes at most COMMIT_BYTES and a
			 * record (daemon/keeper/durable.c): a longer bad tail is
			 * not a torn append. */
			if (rest <= TORN_MAX && (r == -1 || last || all_zero(f->p + off, rest))) {
				info->torn++;
				break;
			}
			snprintf(err, errlen,
			         "%s: bad record at byte %zu with more data after it (not a torn "
			         "append): refusing the state",
			         f->name, off);
			return HL_ECORRUPT;
		}
		if ((b.type != HL_SF_PUT && b.type != HL_SF_DEL) || b.key_len == 0 ||
		    b.key_len > HL_KEY_MAX || b.meta_len > HL_META_MAX ||
		    (b.type == HL_SF_DEL && (b.meta_len || b.val_len))) {
			snprintf(err, errlen, "%s: bad record at byte %zu", f->name, off);
			return HL_ECORRUPT;
		}
		if (b.rev > info->revision)
			info->revision = b.rev;
		info->log_records++;
		off += sizeof(struct sf_rh) + len;
	}
	f->end = off;
	return 0;
}

static int
replay(const struct sf_file *f, int from_log, int (*cb)(const struct hl_sf_rec *r, void *arg),
       void *arg)
{
	size_t off = sizeof(struct sf_head);
	while (off < f->end) {
		struct sf_rh h;
		struct sf_body b;
		memcpy(&h, f->p + off, sizeof(h));
		const uint8_t *body = f->p + off + sizeof(h);
		memcpy(&b, body, sizeof(b));
		off += sizeof(h) + h.len;
		if (b.type == HL_SF_END)
			break;
		struct hl_sf_rec r = {
			.type = b.type,
			.from_log = (uint16_t)from_log,
			.rev = b.rev,
			.key = body + sizeof(b),
			.key_len = b.key_len,
			.meta = body + sizeof(b) + b.key_len,
			.meta_len = b.meta_len,
			.val = body + sizeof(b) + b.key_len + b.meta_len,
			.val_len = b.val_len,
		};
		int rc = cb(&r, arg);
		if (rc)
			return rc;
	}
	return 0;
}

int
hl__sf_exists(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *e;
	uint64_t seq;
	int found = 0;
	while (!found && (e = readdir(d)) != NULL)
		found = strcmp(e->d_name, "snapshot") == 0 || log_seq_of(e->d_name, &seq);
	closedir(d);
	return found;
}

int
hl__sf_load(const char *dir, int (*cb)(const struct hl_sf_rec *r, void *arg), void *arg,
            struct hl_sf_info *info, char *err, size_t errlen)
{
	*info = (struct hl_sf_info){ .next_log_seq = 1 };
	if (errlen)
		err[0] = 0;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		int rc = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return rc;
	}
	DIR *d = fdopendir(dup(dirfd));
	if (!d) {
		int rc = -errno;
		close(dirfd);
		return rc;
	}
	struct sf_file snap = { .name = "snapshot" }, *logs = NULL;
	size_t nlogs = 0, cap = 0;
	int have_snap = 0, rc = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		uint64_t seq;
		if (strcmp(e->d_name, "snapshot") == 0) {
			have_snap = 1;
		} else if (log_seq_of(e->d_name, &seq)) {
			if (nlogs == cap) {
				cap = cap ? cap * 2 : 8;
				struct sf_file *n = realloc(logs, cap * sizeof(*logs));
				if (!n) {
					rc = -ENOMEM;
					break;
				}
				logs = n;
			}
			logs[nlogs] = (struct sf_file){ .seq = seq };
			snprintf(logs[nlogs].name, sizeof(logs[nlogs].name), "%s", e->d_name);
			nlogs++;
		}
	}
	closedir(d);
	if (rc)
		goto out;
	if (nlogs)
		qsort(logs, nlogs, sizeof(*logs), cmp_seq);
	if (have_snap) {
		rc = map_file(dirfd, &snap);
		if (rc == 0)
			rc = check_snapshot(&snap, info, err, errlen);
		else
			snprintf(err, errlen, "%s/snapshot: %s", dir, hl_strerror(rc));
		if (rc)
			goto out;
		info->bytes += snap.size;
	}
	/* The logs the snapshot needs (all of them without one); older ones
	 * are leftovers of a compaction a crash interrupted. */
	size_t first = 0;
	if (have_snap)
		while (first < nlogs && logs[first].seq < info->snap_log_seq)
			first++;
	for (size_t i = first; i < nlogs; i++) {
		uint64_t want = i == first ? (have_snap ? info->snap_log_seq : logs[first].seq)
		                           : logs[i - 1].seq + 1;
		if (logs[i].seq != want) {
			snprintf(err, errlen,
			         "log.%016" PRIx64 " is missing (the logs must follow on from the "
			         "snapshot without a gap): refusing the state",
			         want);
			rc = HL_ECORRUPT;
			goto out;
		}
		rc = map_file(dirfd, &logs[i]);
		if (rc == 0)
			rc = check_log(&logs[i], info, err, errlen);
		else
			snprintf(err, errlen, "%s/%s: %s", dir, logs[i].name, hl_strerror(rc));
		if (rc)
			goto out;
		info->bytes += logs[i].size;
		info->nlogs++;
	}
	/* A new log follows the last one the restore reads, or starts the
	 * chain the snapshot names. */
	if (nlogs > first || (!have_snap && nlogs))
		info->next_log_seq = logs[nlogs - 1].seq + 1;
	else if (have_snap && info->snap_log_seq)
		info->next_log_seq = info->snap_log_seq;
	/* Everything checked: only now is anything handed out. */
	if (cb && have_snap)
		rc = replay(&snap, 0, cb, arg);
	for (size_t i = first; rc == 0 && cb && i < nlogs; i++)
		rc = replay(&logs[i], 1, cb, arg);
out:
	if (snap.p)
		munmap((void *)(uintptr_t)snap.p, snap.size);
	for (size_t i = 0; i < nlogs; i++)
		if (logs[i].p)
			munmap((void *)(uintptr_t)logs[i].p, logs[i].size);
	free(logs);
	close(dirfd);
	return rc;
}
