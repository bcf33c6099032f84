/* SPDX-License-Identifier: MIT */
/*
 * out.c: structured output as text or JSON, and the escaping of binary
 * bytes (see out.h for the exact rules). Text is written here; JSON is a
 * json-c tree, written by json-c, with the binary-safe rule applied to the
 * strings before they go in and the C1 escapes after it comes out. It
 * writes only to the FILE it was given and knows nothing of heirloom.
 */
#include "out.h"

#include <json-c/json.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void
out_init(struct out *o, FILE *f, int json)
{
	memset(o, 0, sizeof(*o));
	o->f = f;
	o->json = json;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at P (1..4) and its code point, or 0
 * when the bytes there are not valid UTF-8 (overlong forms, surrogates and
 * code points above U+10FFFF are invalid). */
static size_t
utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
	unsigned char b = p[0];
	size_t len;
	uint32_t c, min;
	if (b < 0x80) {
		*cp = b;
		return 1;
	} else if (b >= 0xc2 && b <= 0xdf) {
		len = 2, c = b & 0x1f, min = 0x80;
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3, c = b & 0x0f, min = 0x800;
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4, c = b & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

void
out_text_escape(FILE *f, const void *p, size_t n, int quote)
{
	const unsigned char *s = p;
	size_t i = 0;
	while (i < n) {
		unsigned char b = s[i];
		uint32_t cp;
		size_t len;
		if (b == '\\') {
			fputs("\\\\", f);
		} else if (b == '"' && quote) {
			fputs("\\\"", f);
		} else if (b >= 0x20 && b < 0x7f) {
			putc(b, f);
		} else if (b == '\n') {
			fputs("\\n", f);
		} else if (b == '\t') {
			fputs("\\t", f);
		} else if (b == '\r') {
			fputs("\\r", f);
		} else if (b >= 0x80 && (len = utf8_seq(s + i, n - i, &cp)) > 1 && cp >= 0xa0) {
			fwrite(s + i, 1, len, f);
			i += len;
			continue;
		} else {
			fprintf(f, "\\x%02x", b);
		}
		i++;
	}
}

void
out_fmt_time(char *buf, size_t len, uint64_t wall_ns)
{
	time_t t = (time_t)(wall_ns / 1000000000ull);
	struct tm tm;
	if (!gmtime_r(&t, &tm)) {
		snprintf(buf, len, "@%llu", (unsigned long long)wall_ns);
		return;
	}
	char day[24];
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03uZ", day, (unsigned)(wall_ns / 1000000ull % 1000ull));
}

/* ---- JSON (json-c) ---- */

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Bytes as a json-c string: valid UTF-8 as is, each byte that is not
 * part of valid UTF-8 as U+FFFD. *REPLACED: whether one was. NULL when
 * out of memory. */
static struct json_object *
json_bytes(const unsigned char *s, size_t n, int *replaced)
{
	*replaced = 0;
	if (n > INT_MAX / 3)
		return NULL;
	char *buf = malloc(n * 3 + 1);
	if (!buf)
		return NULL;
	size_t len = 0, i = 0;
	while (i < n) {
		uint32_t cp;
		size_t k = utf8_seq(s + i, n - i, &cp);
		if (k) {
			memcpy(buf + len, s + i, k);
			len += k;
			i += k;
		} else {
			/* U+FFFD in UTF-8 */
			buf[len++] = (char)0xef;
			buf[len++] = (char)0xbf;
			buf[len++] = (char)0xbd;
			i++;
			*replaced = 1;
		}
	}
	struct json_object *j = json_object_new_string_len(buf, (int)len);
	free(buf);
	return j;
}

static struct json_object *
json_hex(const unsigned char *s, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	if (n > INT_MAX / 2)
		return NULL;
	char *buf = malloc(n * 2 + 1);
	if (!buf)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		buf[2 * i] = digits[s[i] >> 4];
		buf[2 * i + 1] = digits[s[i] & 15];
	}
	struct json_object *j = json_object_new_string_len(buf, (int)(n * 2));
	free(buf);
	return j;
}

/* Write document S of N bytes and a newline, with U+007F-U+009F escaped
 * as \u00XX: json-c writes them raw (JSON allows it), and a terminal may
 * act on a C1 control. S is valid UTF-8 (json_bytes() made every string
 * so, and member names are ours, in ASCII), so a 0x7f byte or a 0xc2 lead
 * byte occurs only inside a string, where the escape is the same
 * character. */
static void
write_doc(FILE *f, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t from = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned cp;
		if (p[i] == 0x7f)
			cp = 0x7f;
		else if (p[i] == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f)
			cp = p[i + 1];
		else
			continue;
		fwrite(p + from, 1, i - from, f);
		fprintf(f, "\\u%04x", cp);
		if (cp != 0x7f)
			i++;
		from = i + 1;
	}
	fwrite(p + from, 1, n - from, f);
	putc('\n', f);
}

static void
json_write(struct out *o, struct json_object *j)
{
	size_t n;
	const char *s = json_object_to_json_string_length(j, JSON_FLAGS, &n);
	if (!s)
		o->failed = 1;
	else
		write_doc(o->f, s, n);
}

static struct out_frame *
top(struct out *o)
{
	return o->depth ? &o->st[o->depth - 1] : NULL;
}

/* Add V (NULL: JSON null) to the open container as member NAME, or write
 * it as a document of its own at the top level. Takes V, and frees it when
 * that fails: returns 0, or -1 with o->failed set. */
static int
json_add(struct out *o, const char *name, struct json_object *v)
{
	struct out_frame *fr = top(o);
	if (!fr) {
		json_write(o, v);
		json_object_put(v);
		return 0;
	}
	fr->count++;
	if (!fr->j ||
	    (fr->arr ? json_object_array_add(fr->j, v) : json_object_object_add(fr->j, name, v))) {
		json_object_put(v);
		o->failed = 1;
		return -1;
	}
	return 0;
}

/* A value that could not be made (out of memory) must not read as null. */
static void
json_add_new(struct out *o, const char *name, struct json_object *v)
{
	if (!v)
		o->failed = 1;
	else
		json_add(o, name, v);
}

static void
json_bytes_member(struct out *o, const char *name, const void *p, size_t n)
{
	int replaced;
	struct out_frame *fr = top(o);
	json_add_new(o, name, json_bytes(p, n, &replaced));
	if (replaced && fr && !fr->arr) {
		char hname[96];
		snprintf(hname, sizeof(hname), "%s_hex", name);
		json_add_new(o, hname, json_hex(p, n));
	}
}

/* ---- the tree ---- */

static void
indent(struct out *o)
{
	/* Members of the top-level object sit at column 0. */
	for (int i = 1; i < o->depth; i++)
		fputs("  ", o->f);
}

/* Text: everything before a scalar member's value. */
static void
pre(struct out *o, const char *name)
{
	struct out_frame *fr = top(o);
	if (fr && fr->line) {
		if (!fr->arr)
			fprintf(o->f, " %s=", name);
		else if (fr->count)
			putc(',', o->f);
	} else if (fr && !fr->arr) {
		indent(o);
		fprintf(o->f, "%s: ", name);
	} else if (fr) {
		indent(o);
		fputs("- ", o->f);
	}
	if (fr)
		fr->count++;
}

/* Text: after a scalar, in a multi-line container, the end of its line. */
static void
post(struct out *o)
{
	struct out_frame *fr = top(o);
	if (fr && !fr->line)
		putc('\n', o->f);
}

static void
push(struct out *o, int arr, int line, struct json_object *j)
{
	if (o->depth == OUT_DEPTH) {
		/* A command nests deeper than any document of ours needs: a bug
		 * in heirloomctl, never caused by input. */
		fputs("heirloomctl: internal error: output nested too deep\n", stderr);
		abort();
	}
	o->st[o->depth++] = (struct out_frame){ .arr = arr, .line = line, .j = j };
}

/*
 * Text layout of containers:
 *   in an object:           "name:" then the members indented below;
 *   in an array:            "- " then the container on that one line;
 *   in a one-line container: " name={...}" or ",[...]".
 */
static void
begin(struct out *o, const char *name, int arr)
{
	struct out_frame *fr = top(o);
	if (o->json) {
		struct json_object *j = arr ? json_object_new_array() : json_object_new_object();
		if (!j)
			o->failed = 1;
		else if (fr && json_add(o, name, j))
			j = NULL; /* freed */
		/* Inside a container the frame borrows J from its parent. */
		push(o, arr, 0, j);
		return;
	}
	if (!fr) {
		push(o, arr, 0, NULL);
	} else if (fr->line) {
		pre(o, name);
		putc(arr ? '[' : '{', o->f);
		push(o, arr, 1, NULL);
	} else if (fr->arr) {
		fr->count++;
		indent(o);
		fputs(arr ? "- [" : "-", o->f);
		push(o, arr, 1, NULL);
	} else {
		fr->count++;
		indent(o);
		fprintf(o->f, "%s:\n", name);
		push(o, arr, 0, NULL);
	}
}

static void
end(struct out *o)
{
	struct out_frame *fr = top(o);
	if (!fr)
		return;
	o->depth--;
	struct out_frame *up = top(o);
	if (o->json) {
		/* The root is ours; the others belong to their parents. */
		if (!up && fr->j) {
			if (!o->failed)
				json_write(o, fr->j);
			json_object_put(fr->j);
		}
	} else if (fr->line) {
		if (up && up->line)
			putc(fr->arr ? ']' : '}', o->f);
		else
			fputs(fr->arr ? "]\n" : "\n", o->f);
	} else if (fr->arr && fr->count == 0) {
		indent(o);
		fputs(o->depth ? "  (none)\n" : "(none)\n", o->f);
	}
}

void
out_obj_begin(struct out *o, const char *name)
{
	begin(o, name, 0);
}

void
out_obj_end(struct out *o)
{
	end(o);
}

void
out_arr_begin(struct out *o, const char *name)
{
	begin(o, name, 1);
}

void
out_arr_end(struct out *o)
{
	end(o);
}

void
out_u64(struct out *o, const char *name, uint64_t v)
{
	if (o->json) {
		json_add_new(o, name, json_object_new_uint64(v));
		return;
	}
	pre(o, name);
	fprintf(o->f, "%llu", (unsigned long long)v);
	post(o);
}

void
out_i64(struct out *o, const char *name, int64_t v)
{
	if (o->json) {
		json_add_new(o, name, json_object_new_int64(v));
		return;
	}
	pre(o, name);
	fprintf(o->f, "%lld", (long long)v);
	post(o);
}

void
out_bool(struct out *o, const char *name, int v)
{
	if (o->json) {
		json_add_new(o, name, json_object_new_boolean(v != 0));
		return;
	}
	pre(o, name);
	fputs(v ? "yes" : "no", o->f);
	post(o);
}

void
out_null(struct out *o, const char *name)
{
	if (o->json) {
		json_add(o, name, NULL);
		return;
	}
	pre(o, name);
	fputs("-", o->f);
	post(o);
}

/* A text value on a one-line container is quoted when it would otherwise
 * be ambiguous. */
static int
needs_quotes(const unsigned char *s, size_t n)
{
	if (n == 0)
		return 1;
	for (size_t i = 0; i < n; i++)
		if (s[i] == ' ' || s[i] == '=' || s[i] == '"' || s[i] == ',')
			return 1;
	return 0;
}

void
out_bytes(struct out *o, const char *name, const void *p, size_t n)
{
	if (o->json) {
		json_bytes_member(o, name, p, n);
		return;
	}
	struct out_frame *fr = top(o);
	pre(o, name);
	if (fr && fr->line && needs_quotes(p, n)) {
		putc('"', o->f);
		out_text_escape(o->f, p, n, 1);
		putc('"', o->f);
	} else {
		out_text_escape(o->f, p, n, 0);
	}
	post(o);
}

void
out_str(struct out *o, const char *name, const char *s)
{
	out_bytes(o, name, s, strlen(s));
}

void
out_time(struct out *o, const char *name, uint64_t wall_ns)
{
	char buf[48];
	out_fmt_time(buf, sizeof(buf), wall_ns);
	if (!o->json) {
		out_str(o, name, wall_ns ? buf : "never");
		return;
	}
	char nsname[96];
	snprintf(nsname, sizeof(nsname), "%s_ns", name);
	if (wall_ns)
		out_str(o, name, buf);
	else
		out_null(o, name);
	out_u64(o, nsname, wall_ns);
}

void
out_dur(struct out *o, const char *name, uint64_t ns)
{
	if (o->json) {
		char nsname[96];
		snprintf(nsname, sizeof(nsname), "%s_ns", name);
		out_u64(o, nsname, ns);
		return;
	}
	char buf[48];
	if (ns < 1000)
		snprintf(buf, sizeof(buf), "%lluns", (unsigned long long)ns);
	else if (ns < 1000000)
		snprintf(buf, sizeof(buf), "%.3fus", (double)ns / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, sizeof(buf), "%.3fms", (double)ns / 1e6);
	else
		snprintf(buf, sizeof(buf), "%.3fs", (double)ns / 1e9);
	out_str(o, name, buf);
}

int
out_finish(struct out *o)
{
	while (o->depth)
		end(o);
	if (o->failed) {
		fputs("heirloomctl: out of memory while writing JSON\n", stderr);
		o->failed = 0;
		return -1;
	}
	if (fflush(o->f) != 0 || ferror(o->f))
		return -1;
	return 0;
}
