/* SPDX-License-Identifier: MIT */
/*
 * out.h: heirloomctl's structured output. A command describes its answer
 * once, as a tree of named fields, and out.c writes it either as indented
 * "name: value" text for people or as one compact JSON document for
 * scripts. It also owns the escaping of binary keys and values, which may
 * hold any bytes.
 *
 * JSON is built and written by json-c (Debian's libjson-c; why json-c:
 * docs/architecture.md, "heirloomctl"): a command's calls build a json-c
 * tree, and the end of its top-level container writes it as one line.
 * The binary-safe rule sits on top, here.
 *
 * Binary bytes (keys, values, metadata, log text):
 *  - text: printable ASCII and valid UTF-8 (U+00A0 and up) as is; backslash
 *    as "\\"; \n, \t, \r as such; every other byte as "\xNN". Lossless.
 *  - JSON: a JSON string. Valid UTF-8 stays as it is; each byte that is
 *    not part of valid UTF-8 becomes U+FFFD, and then, only then, a
 *    sibling member "<name>_hex" carries the exact bytes as lower-case
 *    hex. So a script gets readable text for text, and never loses a
 *    byte. No control character reaches the output raw: json-c escapes
 *    '"', '\\' and U+0000-U+001F (\n, \t, \r, \b, \f or \u00XX), and
 *    out.c escapes U+007F-U+009F (DEL and the C1 controls, which a
 *    terminal may obey) as \u00XX on top.
 *
 * Not thread-safe; one struct out per document.
 */
#ifndef HL_CTL_OUT_H
#define HL_CTL_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define OUT_DEPTH 8

struct json_object;

struct out_frame {
	int arr;   /* 1 array, 0 object */
	int count; /* members written so far */
	int line;  /* text: this container is written on one line */
	/* JSON: this container (borrowed: its parent holds it; the root
	 * frame's is freed when the document is written). */
	struct json_object *j;
};

struct out {
	FILE *f;
	int json;
	int depth;
	int failed; /* JSON: out of memory while building; out_finish() fails */
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
/* Binary bytes (see above); the "<name>_hex" sibling only inside an
 * object. */
void out_bytes(struct out *o, const char *name, const void *p, size_t n);
/* A CLOCK_REALTIME time in ns: text "2024-05-01T12:00:00.123Z" ("never"
 * for 0); JSON both "NAME": "<that>" (null for 0) and "NAME_ns": ns. */
void out_time(struct out *o, const char *name, uint64_t wall_ns);
/* A duration in ns: text "5.373 ms"; JSON "NAME_ns": ns. */
void out_dur(struct out *o, const char *name, uint64_t ns);

/* Finish the document: close what is open (JSON: write it, one line).
 * Returns 0, or -1 if writing failed (for example a closed pipe: errno is
 * EPIPE) or the JSON document could not be built (out of memory). */
int out_finish(struct out *o);

/* The text escaper, for commands that write lines of their own (keys,
 * watch). QUOTE: also escape '"' (for values written inside quotes). */
void out_text_escape(FILE *f, const void *p, size_t n, int quote);
/* ISO 8601 UTC with milliseconds into BUF (at least 32 bytes). */
void out_fmt_time(char *buf, size_t len, uint64_t wall_ns);

#endif /* HL_CTL_OUT_H */
