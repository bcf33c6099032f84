/* SPDX-License-Identifier: MIT */
/*
 * statefile.h: the files of a state directory (durability, issue 17): their
 * format, writing them crash-safely, and reading them back whole. Shared
 * by the keeper (writes; checks the files before it creates a segment) and
 * the worker (restores the table from them). It only formats, checks and
 * does file I/O: it never touches the segment, never logs and never exits.
 *
 * A state directory holds:
 *   snapshot      the table at one moment: a header, one PUT record per
 *                 key, an END record (the table's revision, the record
 *                 count and a CRC over every record's CRC); written as
 *                 snapshot.tmp, fsynced, renamed, the directory fsynced
 *   log.<seq>     changes after the snapshot, in each shard's revision
 *                 order: a header, then PUT and DEL records; <seq> is 16
 *                 hex digits, contiguous from the snapshot's log_seq
 *   lock          flock'ed by the keeper that writes the directory
 *
 * Every record: u32 length of the body, u32 CRC-32C of the body (isa-l's
 * crc32_iscsi), the body. A header carries its own CRC. The format
 * version is HL_SF_VERSION; any other is refused.
 *
 * Reading (hl__sf_load()) checks everything before it hands out a single
 * record: a snapshot that fails any check is refused (HL_ECORRUPT), never
 * loaded in part. In a log, a record cut short by the end of the file, or
 * the last record of the file with a wrong CRC, or a tail of zero bytes, is
 * a torn append (a crash during the write): dropped, and counted. Any other
 * bad record is corruption and refuses the whole directory.
 */
#ifndef HL_DAEMON_STATEFILE_H
#define HL_DAEMON_STATEFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HL_SF_VERSION 1u

enum hl_sf_type {
	HL_SF_PUT = 1, /* key = meta + value at rev */
	HL_SF_DEL = 2, /* key deleted at rev */
	HL_SF_END = 3, /* snapshot's last record: rev = table revision, count */
};

/* One record as the reader hands it out; pointers valid during the
 * callback only. FROM_LOG: 0 for a snapshot record (restore it as is), 1
 * for a log record (apply it only over an older revision of the key). */
struct hl_sf_rec {
	uint16_t type;
	uint16_t from_log;
	uint64_t rev;
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *meta;
	uint32_t meta_len;
	const uint8_t *val;
	uint32_t val_len;
};

/* CRC-32C of N bytes at P, continuing CRC (0 to start). */
uint32_t hl__crc32c(uint32_t crc, const void *p, size_t n);

/*
 * A buffered writer of one file. Records are encoded into buf and written
 * by hl__sf_flush(), which loops over short writes and fails with the
 * errno of the write (a write that makes no progress is -EIO). On any
 * failure the file's content past `synced` is unknown: the caller abandons
 * the file (a snapshot.tmp) or starts a new log.
 */
struct hl_sf_writer {
	int fd;
	uint8_t *buf;
	size_t len, cap;
	uint64_t off;   /* bytes written to the file */
	uint64_t count; /* records put */
	uint32_t chain; /* CRC over the records' CRCs (snapshot's END) */
	uint64_t bytes; /* record bytes put */
};

/* Append record R (type PUT or DEL) to W's buffer: 0 or -ENOMEM. */
int hl__sf_put(struct hl_sf_writer *w, const struct hl_sf_rec *r);
/* Write the buffer out: 0 or -errno. */
int hl__sf_flush(struct hl_sf_writer *w);
/* Close W's file and free its buffer (safe twice). */
void hl__sf_close(struct hl_sf_writer *w);

/* Begin DIRFD/snapshot.tmp (replacing one a crash left) for a snapshot
 * whose log replay starts at LOG_SEQ. 0 or -errno; on failure nothing to
 * close. */
int hl__sf_snap_begin(struct hl_sf_writer *w, int dirfd, uint64_t log_seq);
/* Finish it: the END record with REVISION, write, fsync, rename over
 * snapshot, fsync the directory. 0 or -errno; W is closed either way, and
 * on failure snapshot.tmp is removed and the previous snapshot stays. */
int hl__sf_snap_commit(struct hl_sf_writer *w, int dirfd, uint64_t revision);
/* Give up a snapshot being written (W closed, snapshot.tmp removed). */
void hl__sf_snap_abort(struct hl_sf_writer *w, int dirfd);

/* Create DIRFD/log.<SEQ> (replacing an empty one), write its header,
 * fdatasync it and the directory. 0 or -errno. */
int hl__sf_log_create(struct hl_sf_writer *w, int dirfd, uint64_t seq);
/* Flush W and fdatasync it: the group commit. 0 or -errno. */
int hl__sf_log_sync(struct hl_sf_writer *w);

/* Remove every log.<seq> with seq < BELOW and a leftover snapshot.tmp;
 * then fsync the directory. */
void hl__sf_prune(int dirfd, uint64_t below);

/* What hl__sf_load() found. */
struct hl_sf_info {
	int have_snapshot;
	uint64_t snap_records; /* keys in the snapshot */
	uint64_t snap_log_seq; /* first log the snapshot needs */
	uint64_t nlogs;        /* log files replayed */
	uint64_t log_records;  /* records in them */
	uint64_t torn;         /* torn tails dropped */
	uint64_t next_log_seq; /* the sequence a new log takes */
	uint64_t revision;     /* highest revision in the files */
	uint64_t bytes;        /* bytes read */
};

/*
 * Read state directory DIR. First check all of it (every header, CRC and
 * the chain of logs); then, if CB is not NULL, call it for every record in
 * restore order: the snapshot's PUTs, then each log's records. CB returns
 * 0 or stops the load with its error. Returns 0 (also for a directory with
 * no state: info->have_snapshot 0 and info->nlogs 0), HL_ECORRUPT with
 * the file and offset in ERR, or -errno. Nothing is handed to CB unless
 * every check passed.
 */
int hl__sf_load(const char *dir, int (*cb)(const struct hl_sf_rec *r, void *arg), void *arg,
                struct hl_sf_info *info, char *err, size_t errlen);

/* Whether DIR holds any state file (snapshot or log). */
int hl__sf_exists(const char *dir);

#endif /* HL_DAEMON_STATEFILE_H */
