/* SPDX-License-Identifier: MIT */
/*
 * out.h: heirloomctl's structured output. A command describes its answer
 * once, as a tree of named fields, and out.c writes it either as indented
 * "name: value" text for people or as one compact JSON document for
 * scripts. It also owns the escaping of binary keys and values, which may
 * hold any bytes.
 *
 * Binary bytes (keys, values, metadata, log text):
 *  - text: printable ASCII and valid UTF-8 (U+00A0 and up) as is; backslash
 *    as "\\"; \n, \t, \r as such; every other byte as "\xNN". Lossless.
 *  - JSON: a JSON string; '"' and '\' escaped; control bytes (0x00-0x1f,
 *    0x7f) and C1 controls (U+0080-U+009F) as \u00XX; valid UTF-8 as is.
 *    Each byte that is not part of valid UTF-8 becomes U+FFFD (written
 *    \ufffd), and then, only then, a sibling member "<name>_hex" carries
 *    the exact bytes as lower-case hex. So a script gets readable text for
 *    text, and never loses a byte.
 *
 * Not thread-safe; one struct out per document.
 */
#ifndef HL_CTL_OUT_H
#define HL_CTL_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define OUT_DEPTH 8

struct out_frame {
	int arr;   /* 1 array, 0 object */
	int count; /* members written so far */
	int line;  /* text: this container is written on one line */
};

struct out {
	FILE *f;
	int json;
	int depth;
	struct out_frame st[OUT_DEPTH];
};

void out_init(struct out *o, FILE *f, int json);

/* Containers. NAME is the member name inside an object, and is ignored at
 * the top level and inside arrays. In text, an object inside an array is
 * written on one line as "- a=1 b=2". Nesting is at most OUT_DEPTH. */
void out_obj_begin(struct out *o, const char *name);
void out_obj_end(struct out *o);
void out_arr_begin(struct out *o, const char *name);
void out_arr_end(struct out *o);

void out_u64(struct out *o, const char *name, uint64_t v);
void out_i64(struct out *o, const char *name, int64_t v);
void out_bool(struct out *o, const char *name, int v);
void out_null(struct out *o, const char *name);
/* A NUL-terminated string; escaped like binary bytes. */
void out_str(struct out *o, const char *name, const char *s);
/* Binary bytes (see above); in JSON, inside an object only. */
void out_bytes(struct out *o, const char *name, const void *p, size_t n);
/* A CLOCK_REALTIME time in ns: text "2024-05-01T12:00:00.123Z" ("never"
 * for 0); JSON both "NAME": "<that>" (null for 0) and "NAME_ns": ns. */
void out_time(struct out *o, const char *name, uint64_t wall_ns);
/* A duration in ns: text "5.373 ms"; JSON "NAME_ns": ns. */
void out_dur(struct out *o, const char *name, uint64_t ns);

/* Finish the document (JSON: a newline). Returns 0, or -1 if writing
 * failed (for example a closed pipe). */
int out_finish(struct out *o);

/* The escapers, for commands that write lines of their own (keys, watch).
 * QUOTE: also escape '"' (for values written inside quotes). */
void out_text_escape(FILE *f, const void *p, size_t n, int quote);
/* Write a JSON string; returns 1 if a byte had to be replaced by U+FFFD. */
int out_json_string(FILE *f, const void *p, size_t n);
void out_hex(FILE *f, const void *p, size_t n);
/* ISO 8601 UTC with milliseconds into BUF (at least 32 bytes). */
void out_fmt_time(char *buf, size_t len, uint64_t wall_ns);

#endif /* HL_CTL_OUT_H */
