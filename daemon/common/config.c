/* SPDX-License-Identifier: MIT */
/*
 * config.c: resolves daemon options from flags, HEIRLOOM_* variables, the
 * INI file (through Debian's inih) and defaults, and prints --help and
 * --print-config. It writes the caller's option variables only once a load
 * has fully succeeded; it must never exit, abort or log, because each daemon
 * chooses how to report a bad configuration.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CONFIG_DIR "/etc/heirloom"
#define ENV_PREFIX         "HEIRLOOM_"
/* inih hands keys of up to 49 bytes to the handler; stay well inside. */
#define MAX_NAME 40

/* The two options every daemon has: they choose the config file, so they
 * can come only from a flag, the environment or the default. */
enum { BI_NAME, BI_CONFIG, NBUILTIN };
static const struct hl_cfg_opt builtin[NBUILTIN] = {
	[BI_NAME] = { .name = "name",
	              .type = HL_CFG_STR,
	              .def = "default",
	              .metavar = "NAME",
	              .help = "Instance name; selects the config file CONFIG_DIR/NAME.conf." },
	[BI_CONFIG] = { .name = "config",
	                .type = HL_CFG_STR,
	                .metavar = "PATH",
	                .help = "Config file to read instead of CONFIG_DIR/NAME.conf; must "
	                        "exist." },
};

/* Per type: the --help placeholder and summary, and what a bad value is not. */
static const struct {
	const char *metavar, *help, *is_not;
} types[] = {
	[HL_CFG_STR] = { "STRING", "string", "a string" },
	[HL_CFG_INT] = { "N", "integer", "an integer" },
	[HL_CFG_BOOL] = { "", "boolean", "a boolean (true/false, yes/no, on/off, 1/0)" },
	[HL_CFG_MS] = { "DURATION", "duration (ms, s, m or h; bare number = ms)",
	                "a duration (e.g. 250ms, 30s, 2m, 1h; a bare number is ms)" },
	[HL_CFG_MODE] = { "MODE", "octal file mode", "an octal file mode (e.g. 0660)" },
	[HL_CFG_SIZE] = { "SIZE", "size (K, M, G or T = 1024^n)",
	                  "a size (e.g. 4096, 64K, 16M, 2G)" },
};

/* Precedence of the places a key may sit in the file, lowest first. */
enum { LVL_NONE, LVL_TOP, LVL_COMMON, LVL_OWN };

union value {
	int64_t i;
	bool b;
	unsigned mode;
	char *s;
};

struct hl_cfg_slot {
	enum hl_cfg_source src;
	unsigned line; /* for HL_CFG_SRC_FILE */
	int level;     /* for HL_CFG_SRC_FILE: LVL_* of the winning key */
	union value v; /* owned until committed to dst; a STR is then NULL here */
};

/* Where a candidate value was found, for precedence and for messages. */
struct origin {
	enum hl_cfg_source src;
	const char *what; /* the flag, the variable's name or the file's path */
	unsigned line;
	int level;
};

struct file_ctx {
	struct hl_cfg *cfg;
	FILE *fp;
	const char *path;
	unsigned line;     /* physical line inih is handling, counted by read_line() */
	unsigned err_line; /* first line our handler or read_line() rejected */
	int rc;            /* its error, message already in err */
	int read_errno;
	char *err;
	size_t errlen;
};

/* Write the message and return rc, so that each error path is one statement.
 * err may be NULL when errlen is 0. */
static int __attribute__((format(printf, 4, 5)))
fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return rc;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static const char *
errdesc(int e)
{
	const char *d = strerrordesc_np(e);
	return d ? d : "unknown error";
}

static size_t
nall(const struct hl_cfg *cfg)
{
	return NBUILTIN + cfg->nopts;
}

static const struct hl_cfg_opt *
opt_at(const struct hl_cfg *cfg, size_t i)
{
	return i < NBUILTIN ? &builtin[i] : &cfg->opts[i - NBUILTIN];
}

/* Index of the option called name[0..len), or of the one with short name c
 * when len is 0; -1 if there is none. */
static long
find_opt(const struct hl_cfg *cfg, const char *name, size_t len, char c)
{
	for (size_t i = 0; i < nall(cfg); i++) {
		const struct hl_cfg_opt *o = opt_at(cfg, i);
		if (len ? strlen(o->name) == len && !memcmp(o->name, name, len)
		        : c && o->short_name == c)
			return (long)i;
	}
	return -1;
}

static void
env_name(const struct hl_cfg_opt *o, char *buf, size_t len)
{
	size_t n = strlen(ENV_PREFIX);

	memcpy(buf, ENV_PREFIX, n);
	for (const char *p = o->name; *p && n + 1 < len; p++)
		buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
	buf[n] = '\0';
}

static bool
bounded(const struct hl_cfg_opt *o)
{
	return o->min != 0 || o->max != 0;
}

/* INT, MS or SIZE. Digits are consumed even past overflow, so that
 * "99999999999999999999x" reads as malformed rather than as too large. */
static int
parse_number(const char *s, enum hl_cfg_type t, int64_t *out)
{
	static const struct {
		const char *suffix;
		int64_t mul;
	} ms[] = { { "", 1 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 } },
	  size[] = { { "", 1 },
		     { "K", 1ll << 10 },
		     { "M", 1ll << 20 },
		     { "G", 1ll << 30 },
		     { "T", 1ll << 40 } };
	bool sign = t == HL_CFG_INT && (*s == '-' || *s == '+');
	char *end;
	long long n;

	_Static_assert(sizeof(ms) == sizeof(size), "one loop walks both suffix tables");
	if (!isdigit((unsigned char)s[sign])) /* strtoll would also take spaces */
		return -EINVAL;
	errno = 0;
	n = strtoll(s, &end, 10);
	bool overflow = errno == ERANGE;
	for (size_t k = 0; k < sizeof(ms) / sizeof(ms[0]); k++) {
		if (t == HL_CFG_INT  ? *end != '\0'
		    : t == HL_CFG_MS ? strcmp(end, ms[k].suffix) != 0
		                     : strcasecmp(end, size[k].suffix) != 0)
			continue;
		int64_t mul = t == HL_CFG_INT ? 1 : t == HL_CFG_MS ? ms[k].mul : size[k].mul;
		return overflow || __builtin_mul_overflow(n, mul, out) ? -ERANGE : 0;
	}
	return -EINVAL;
}

static bool
in_list(const char *const *list, const char *w)
{
	for (; list && *list; list++)
		if (!strcmp(*list, w))
			return true;
	return false;
}

/* "one of a, b, c" for the choices of an option. */
static void
choices_text(const struct hl_cfg_opt *o, char *buf, size_t len)
{
	size_t n = (size_t)snprintf(buf, len, "one of");
	for (const char *const *c = o->choices; *c && n < len; c++)
		n += (size_t)snprintf(buf + n, len - n, "%s %s", c == o->choices ? "" : ",", *c);
}

/* The instance name becomes a file name and, elsewhere, part of segment
 * names, so it must not climb directories or hide as a dotfile. */
static bool
valid_instance_name(const char *s)
{
	size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.");
	return n > 0 && n <= 64 && s[n] == '\0' && s[0] != '.';
}

/* Parse text as o's type into *v: 0, -EINVAL (malformed), -ERANGE, -ENOMEM. */
static int
parse_value(const struct hl_cfg_opt *o, const char *text, union value *v)
{
	static const char *const words[] = { "false", "true", "no", "yes", "off", "on", "0", "1" };
	int rc = -EINVAL;

	switch (o->type) {
	case HL_CFG_STR:
		if (o == &builtin[BI_NAME] && !valid_instance_name(text))
			return -EINVAL;
		if (o->choices && !in_list(o->choices, text))
			return -EINVAL;
		v->s = strdup(text);
		return v->s ? 0 : -ENOMEM;
	case HL_CFG_BOOL:
		for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
			if (!strcasecmp(text, words[k])) {
				v->b = k & 1; /* words alternate false, true */
				return 0;
			}
		return -EINVAL;
	case HL_CFG_MODE:
		v->mode = 0;
		for (const char *p = text; *p; p++)
			if (*p < '0' || *p > '7' ||
			    (v->mode = v->mode * 8 + (unsigned)(*p - '0')) > 07777)
				return -EINVAL;
		return *text ? 0 : -EINVAL;
	case HL_CFG_INT:
	case HL_CFG_MS:
	case HL_CFG_SIZE:
		rc = parse_number(text, o->type, &v->i);
		if (rc == 0 && bounded(o) && (v->i < o->min || v->i > o->max))
			rc = -ERANGE;
		break;
	}
	return rc;
}

/* The unit that bounds are written in, right after the number. */
static const char *
unit_of(const struct hl_cfg_opt *o)
{
	return o->type == HL_CFG_MS ? "ms" : "";
}

/* Name the source, the value (cut short: it is the caller's text) and why. */
static int
bad_value(char *err, size_t errlen, const struct origin *org, const struct hl_cfg_opt *o,
          const char *text, int rc)
{
	char why[256], choices[128];

	if (o->choices)
		choices_text(o, choices, sizeof(choices));
	if (rc == -ENOMEM)
		snprintf(why, sizeof(why), "out of memory");
	else if (rc == -ERANGE && bounded(o))
		snprintf(why, sizeof(why), "'%.80s' is out of range %" PRId64 "%s..%" PRId64 "%s%s",
		         text, o->min, unit_of(o), o->max, unit_of(o),
		         o->type == HL_CFG_SIZE ? " bytes" : "");
	else if (rc == -ERANGE)
		snprintf(why, sizeof(why), "'%.80s' is out of range", text);
	else
		snprintf(why, sizeof(why), "'%.80s' is not %s", text,
		         o == &builtin[BI_NAME] ? "a valid instance name (letters, digits, '-', "
		                                  "'_', '.'; no leading '.')"
		         : o->choices           ? choices
		                                : types[o->type].is_not);
	rc = rc == -ENOMEM ? -ENOMEM : -EINVAL;
	if (org->src == HL_CFG_SRC_FLAG)
		return fail(err, errlen, rc, "%s: %s", org->what, why);
	if (org->src == HL_CFG_SRC_ENV)
		return fail(err, errlen, rc, "environment %s: %s", org->what, why);
	if (org->src == HL_CFG_SRC_FILE)
		return fail(err, errlen, rc, "%s:%u: option '%s': %s", org->what, org->line,
		            o->name, why);
	return fail(err, errlen, rc, "default of option '%s': %s", o->name, why);
}

static void
drop(enum hl_cfg_type t, union value *v)
{
	if (t == HL_CFG_STR) {
		free(v->s);
		v->s = NULL;
	}
}

/*
 * Offer text as option i's value from org. It is always validated; it wins
 * if its source ranks above the current one (a later flag beats an earlier
 * one; in the file, a more specific section beats a less specific one).
 */
static int
offer(struct hl_cfg *cfg, size_t i, const char *text, const struct origin *org, char *err,
      size_t errlen)
{
	const struct hl_cfg_opt *o = opt_at(cfg, i);
	struct hl_cfg_slot *s = &cfg->slots[i];
	bool both_file = org->src == HL_CFG_SRC_FILE && s->src == HL_CFG_SRC_FILE;
	enum hl_cfg_type t = o->type; /* a local, so the analyzer sees strdup() cannot change it */
	union value v = { 0 };
	int rc = parse_value(o, text, &v);

	if (rc < 0)
		return bad_value(err, errlen, org, o, text, rc);
	if (both_file && org->level == s->level) {
		drop(t, &v);
		return fail(err, errlen, -EINVAL,
		            "%s:%u: option '%s' is set again (first at line %u)", org->what,
		            org->line, o->name, s->line);
	}
	if (org->src < s->src || (both_file && org->level < s->level)) {
		drop(t, &v);
		return 0;
	}
	drop(t, &s->v);
	*s = (struct hl_cfg_slot){ org->src, org->line, org->level, v };
	return 0;
}

/*
 * One flag at argv[*ai]: "--name[=v]", "--no-name" or "-c[v]". A separate
 * value word is taken only by options that need one: for a bool or an
 * option with an implicit value it would be ambiguous with a positional.
 */
static int
read_flag(struct hl_cfg *cfg, int argc, char **argv, int *ai, char *err, size_t errlen)
{
	const char *arg = argv[*ai], *body = arg + 2, *attached, *val;
	bool is_long = arg[1] == '-', negated = false;
	size_t len = is_long ? strcspn(body, "=") : 0;
	char flag[MAX_NAME + 8];
	long i;

	if ((is_long && len == 4 && !memcmp(body, "help", 4)) || !strcmp(arg, "-h"))
		cfg->request = HL_CFG_HELP;
	else if (is_long && len == 7 && !memcmp(body, "version", 7))
		cfg->request = HL_CFG_VERSION;
	if (cfg->request != HL_CFG_RUN)
		return is_long && body[len] ? fail(err, errlen, -EINVAL, "%.*s: takes no value",
		                                   (int)len + 2, arg)
		                            : 0;
	i = find_opt(cfg, body, len, arg[1]);
	if (i < 0 && len > 3 && !memcmp(body, "no-", 3)) {
		i = find_opt(cfg, body + 3, len - 3, 0);
		negated = i >= 0 && opt_at(cfg, (size_t)i)->type == HL_CFG_BOOL;
		i = negated ? i : -1;
	}
	if (i < 0)
		return fail(err, errlen, -EINVAL, "unknown option '%.*s' (see --help)",
		            is_long ? (int)len + 2 : 2, arg);

	const struct hl_cfg_opt *o = opt_at(cfg, (size_t)i);
	if (is_long)
		snprintf(flag, sizeof(flag), "--%s%s", negated ? "no-" : "", o->name);
	else
		snprintf(flag, sizeof(flag), "-%c", o->short_name);
	attached = is_long ? (body[len] ? body + len + 1 : NULL) : (arg[2] ? arg + 2 : NULL);
	if (attached && (negated || (!is_long && o->type == HL_CFG_BOOL)))
		return fail(err, errlen, -EINVAL, "%s: takes no value (in '%s')", flag, arg);
	if (negated || attached || o->type == HL_CFG_BOOL)
		val = negated ? "false" : attached ? attached : "true";
	else if (o->implicit)
		val = o->implicit;
	else if (*ai + 1 < argc)
		val = argv[++*ai];
	else
		return fail(err, errlen, -EINVAL, "%s: missing value (see --help)", flag);
	return offer(cfg, (size_t)i, val, &(struct origin){ HL_CFG_SRC_FLAG, flag, 0, 0 }, err,
	             errlen);
}

static int
read_flags(struct hl_cfg *cfg, int argc, char **argv, char *err, size_t errlen)
{
	int ai, rc = 0;

	for (ai = argc > 0 ? 1 : 0; ai < argc && cfg->request == HL_CFG_RUN; ai++) {
		if (!strcmp(argv[ai], "--")) {
			ai++;
			break;
		}
		if (argv[ai][0] != '-' || argv[ai][1] == '\0')
			break;
		rc = read_flag(cfg, argc, argv, &ai, err, errlen);
		if (rc < 0)
			return rc;
	}
	cfg->argind = ai;
	return 0;
}

/* The environment, then the defaults (the file's name depends on both). */
static int
read_env_and_defaults(struct hl_cfg *cfg, char *err, size_t errlen)
{
	char var[sizeof(ENV_PREFIX) + MAX_NAME];
	int rc = 0;

	for (size_t i = 0; i < nall(cfg) && rc == 0; i++) {
		const struct hl_cfg_opt *o = opt_at(cfg, i);
		env_name(o, var, sizeof(var));
		const char *val = getenv(var);
		if (val && *val)
			rc = offer(cfg, i, val, &(struct origin){ HL_CFG_SRC_ENV, var, 0, 0 }, err,
			           errlen);
		if (rc == 0 && o->def)
			rc = offer(cfg, i, o->def, &(struct origin){ HL_CFG_SRC_DEFAULT, "", 0, 0 },
			           err, errlen);
	}
	return rc;
}

/*
 * inih's fgets: counts physical lines so the handler can name its line (the
 * packaged inih is built without INI_HANDLER_LINENO), ends the file at our
 * first error so that it is the one reported, and refuses a line that does
 * not fit inih's buffer rather than let inih read its tail as a new line.
 */
static char *
read_line(char *buf, int size, void *stream)
{
	struct file_ctx *fc = stream;

	errno = 0;
	if (fc->rc || !fgets(buf, size, fc->fp)) {
		if (ferror(fc->fp))
			fc->read_errno = errno ? errno : EIO;
		return NULL;
	}
	fc->line++;
	size_t len = strlen(buf);
	if (len + 1 == (size_t)size && buf[len - 1] != '\n' && !feof(fc->fp)) {
		fc->err_line = fc->line;
		fc->rc = fail(fc->err, fc->errlen, -EINVAL, "%s:%u: line longer than %d bytes",
		              fc->path, fc->line, size - 2);
		return NULL;
	}
	return buf;
}

static int
on_entry(void *user, const char *section, const char *key, const char *value)
{
	struct file_ctx *fc = user;
	struct hl_cfg *cfg = fc->cfg;
	int level = LVL_NONE;
	long i = find_opt(cfg, key, strlen(key), 0);

	if (!*section)
		level = LVL_TOP;
	else if (!strcmp(section, "heirloom"))
		level = LVL_COMMON;
	else if (cfg->section && !strcmp(section, cfg->section))
		level = LVL_OWN;
	for (const char *const *f = cfg->foreign; level == LVL_NONE && f && *f; f++)
		if (!strcmp(*f, section))
			return 1; /* a sibling daemon's section: it checks its own keys */

	if (i < 0 && level != LVL_OWN && level != LVL_NONE && in_list(cfg->shared_names, key))
		return 1; /* a sibling daemon's option in a shared section: it checks it */

	if (level == LVL_NONE)
		fc->rc = fail(fc->err, fc->errlen, -EINVAL, "%s:%u: unknown section [%s]", fc->path,
		              fc->line, section);
	else if (i < 0 && in_list(cfg->shared_names, key))
		fc->rc = fail(
		        fc->err, fc->errlen, -EINVAL,
		        "%s:%u: option '%s' is not a %s option (it belongs to another heirloom "
		        "daemon: move it to its section or to [heirloom])",
		        fc->path, fc->line, key, cfg->section);
	else if (i < 0)
		fc->rc = fail(fc->err, fc->errlen, -EINVAL, "%s:%u: unknown option '%s'", fc->path,
		              fc->line, key);
	else if (i < NBUILTIN)
		fc->rc = fail(
		        fc->err, fc->errlen, -EINVAL,
		        "%s:%u: option '%s' cannot be set in a config file (it chooses the file)",
		        fc->path, fc->line, key);
	else
		fc->rc = offer(cfg, (size_t)i, value ? value : "",
		               &(struct origin){ HL_CFG_SRC_FILE, fc->path, fc->line, level },
		               fc->err, fc->errlen);
	fc->err_line = fc->rc ? fc->line : 0;
	return fc->rc == 0;
}

/* Parse an open config file; the first bad line, ours or inih's, is the error. */
static int
parse_file(struct hl_cfg *cfg, FILE *fp, const char *path, char *err, size_t errlen)
{
	struct file_ctx fc = { .cfg = cfg, .fp = fp, .path = path, .err = err, .errlen = errlen };
	bool multiline = ini_allow_multiline;
	int r;

	/*
	 * With multi-line values on, an indented "key = v" after another key is
	 * read as more of that key's value, which turns the common habit of
	 * indenting keys under a section into baffling errors. Debian's inih
	 * makes the switch a global; we load before any thread exists.
	 */
	ini_allow_multiline = false;
	r = ini_parse_stream(read_line, &fc, on_entry, &fc);
	ini_allow_multiline = multiline;

	if (fc.read_errno)
		return fail(err, errlen, -fc.read_errno, "%s: %s", path, errdesc(fc.read_errno));
	if (r == -2)
		return fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	if (r > 0 && (!fc.rc || (unsigned)r < fc.err_line))
		return fail(err, errlen, -EINVAL, "%s:%d: syntax error", path, r);
	return fc.rc;
}

/*
 * The daemons take their options (socket path, mode, group) from the file:
 * another local user who can write it, or replace it in its directory,
 * chooses them. So the file must be ours or root's and not writable by
 * others, and so must its directory (unless sticky, where nobody else can
 * replace our file). Group write is left to the operator, as for the
 * segment: the group is trusted (docs/security.md).
 */
static int
check_trusted(FILE *fp, const char *path, char *err, size_t errlen)
{
	struct stat st;
	char *dir = strdup(path), *slash;
	int rc = 0;

	if (!dir)
		return fail(err, errlen, -ENOMEM, "config file: out of memory");
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (fstat(fileno(fp), &st) < 0) {
		rc = fail(err, errlen, -errno, "config file %s: %s", path, errdesc(errno));
	} else if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & S_IWOTH)) {
		rc = fail(err, errlen, -EPERM,
		          "config file %s: owned by uid %u with mode %04o: refusing it (it must "
		          "belong to root or this user, uid %u, and not be writable by others)",
		          path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
		          (unsigned)geteuid());
	} else if (stat(dir, &st) < 0) {
		rc = fail(err, errlen, -errno, "config directory %s: %s", dir, errdesc(errno));
	} else if ((st.st_uid != 0 && st.st_uid != geteuid()) ||
	           ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))) {
		rc = fail(err, errlen, -EPERM,
		          "config directory %s: owned by uid %u with mode %04o: refusing %s (it "
		          "must belong to root or this user and not be writable by others)",
		          dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), path);
	}
	free(dir);
	return rc;
}

static int
read_file(struct hl_cfg *cfg, char *err, size_t errlen)
{
	bool explicit = cfg->slots[BI_CONFIG].src != HL_CFG_SRC_UNSET;
	const char *dir = cfg->config_dir ? cfg->config_dir : DEFAULT_CONFIG_DIR;
	char *path = NULL;
	FILE *fp;
	int rc;

	if (explicit)
		path = strdup(cfg->slots[BI_CONFIG].v.s);
	else if (asprintf(&path, "%s/%s.conf", dir, cfg->slots[BI_NAME].v.s) < 0)
		path = NULL;
	if (!path)
		return fail(err, errlen, -ENOMEM, "config file: out of memory");

	fp = fopen(path, "re"); /* close-on-exec: the keeper spawns workers */
	if (!fp) {
		rc = -errno;
		/* Only the default file may be absent: an explicit one is a typo. */
		if (rc != -ENOENT || explicit)
			fail(err, errlen, rc, "config file %s: %s", path, errdesc(-rc));
		free(path);
		return rc == -ENOENT && !explicit ? 0 : rc;
	}
	rc = check_trusted(fp, path, err, errlen);
	if (rc == 0)
		rc = parse_file(cfg, fp, path, err, errlen);
	fclose(fp);
	if (rc < 0)
		free(path);
	else
		cfg->config_file = path;
	return rc;
}

/* Cheap checks of the daemon's own table, so a typo fails its first test. */
static int
check_table(const struct hl_cfg *cfg, char *err, size_t errlen)
{
	if (cfg->nopts && !cfg->opts)
		return fail(err, errlen, -EINVAL, "option table: NULL with %zu options",
		            cfg->nopts);
	for (size_t i = NBUILTIN; i < nall(cfg); i++) {
		const struct hl_cfg_opt *o = opt_at(cfg, i);
		const char *n = o->name ? o->name : "";
		size_t len = strlen(n);
		char c = o->short_name;

		if (!len || len > MAX_NAME || !islower((unsigned char)n[0]) ||
		    strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789-") != len ||
		    find_opt(cfg, n, len, 0) != (long)i || !strcmp(n, "help") ||
		    !strcmp(n, "version") || !o->dst || (unsigned)o->type > HL_CFG_SIZE ||
		    (o->choices && o->type != HL_CFG_STR) ||
		    (c && (!isalnum((unsigned char)c) || c == 'h' ||
		           find_opt(cfg, "", 0, c) != (long)i)))
			return fail(err, errlen, -EINVAL,
			            "option table: '%s' has a bad or duplicate name or short name, "
			            "no dst or a bad type",
			            n);
		if (cfg->shared_names && !in_list(cfg->shared_names, n))
			return fail(err, errlen, -EINVAL,
			            "option table: '%s' is missing from the shared names "
			            "(hl__daemon_option_names)",
			            n);
	}
	return 0;
}

/* Hand every value to its variable; cannot fail, so a load is all or nothing. */
static void
commit(struct hl_cfg *cfg)
{
	for (size_t i = 0; i < nall(cfg); i++) {
		const struct hl_cfg_opt *o = opt_at(cfg, i);
		struct hl_cfg_slot *s = &cfg->slots[i];
		void *dst = i == BI_NAME ? &cfg->name : i < NBUILTIN ? NULL : o->dst;

		if (!dst || (s->src == HL_CFG_SRC_UNSET && o->type != HL_CFG_STR))
			continue;
		if (o->type == HL_CFG_STR) {
			*(char **)dst = s->v.s; /* NULL when unset */
			s->v.s = NULL;
		} else if (o->type == HL_CFG_BOOL) {
			*(bool *)dst = s->v.b;
		} else if (o->type == HL_CFG_MODE) {
			*(unsigned *)dst = s->v.mode;
		} else {
			*(int64_t *)dst = s->v.i;
		}
	}
}

static void
free_slots(struct hl_cfg *cfg)
{
	for (size_t i = 0; cfg->slots && i < nall(cfg); i++)
		drop(opt_at(cfg, i)->type, &cfg->slots[i].v);
	free(cfg->slots);
	cfg->slots = NULL;
}

int
hl__cfg_load(struct hl_cfg *cfg, int argc, char **argv, char *err, size_t errlen)
{
	int rc;

	fail(err, errlen, 0, "%s", "");
	cfg->request = HL_CFG_RUN;
	cfg->argind = argc;
	cfg->name = cfg->config_file = NULL;
	cfg->slots = NULL;
	rc = check_table(cfg, err, errlen);
	if (rc < 0)
		return rc;
	cfg->slots = calloc(nall(cfg), sizeof(*cfg->slots));
	if (!cfg->slots)
		return fail(err, errlen, -ENOMEM, "out of memory");

	rc = read_flags(cfg, argc, argv, err, errlen);
	if (rc == 0 && cfg->request != HL_CFG_RUN) {
		FILE *out = cfg->out ? cfg->out : stdout;
		if (cfg->request == HL_CFG_HELP)
			hl__cfg_usage(cfg, out);
		else
			fprintf(out, "%s %s\n", cfg->prog ? cfg->prog : "heirloom",
			        cfg->version ? cfg->version : "(unknown version)");
		free_slots(cfg);
		return 0;
	}
	if (rc == 0)
		rc = read_env_and_defaults(cfg, err, errlen);
	if (rc == 0)
		rc = read_file(cfg, err, errlen);
	if (rc < 0) {
		free_slots(cfg);
		return rc;
	}
	commit(cfg);
	return 0;
}

void
hl__cfg_free(struct hl_cfg *cfg)
{
	for (size_t i = 0; cfg->slots && i < cfg->nopts; i++) {
		if (cfg->opts[i].type == HL_CFG_STR) {
			free(*(char **)cfg->opts[i].dst);
			*(char **)cfg->opts[i].dst = NULL;
		}
	}
	free_slots(cfg);
	free(cfg->name);
	free(cfg->config_file);
	cfg->name = cfg->config_file = NULL;
}

/* One usage entry: flags and help, then type, variable and default below. */
static void
usage_line(FILE *out, char short_name, const char *flag, const char *help)
{
	fprintf(out, "  %c%c%c %-30s %s\n", short_name ? '-' : ' ', short_name ? short_name : ' ',
	        short_name ? ',' : ' ', flag, help ? help : "");
}

void
hl__cfg_usage(const struct hl_cfg *cfg, FILE *out)
{
	char var[sizeof(ENV_PREFIX) + MAX_NAME], flag[2 * MAX_NAME + 16];

	fprintf(out, "Usage: %s [OPTION]...%s%s\n", cfg->prog ? cfg->prog : "heirloom",
	        cfg->args_usage ? " " : "", cfg->args_usage ? cfg->args_usage : "");
	if (cfg->summary)
		fprintf(out, "%s\n", cfg->summary);
	fprintf(out, "\nOptions:\n");
	for (size_t i = 0; i < nall(cfg); i++) {
		const struct hl_cfg_opt *o = opt_at(cfg, i);
		const char *mv = o->metavar ? o->metavar : types[o->type].metavar;

		if (o->type == HL_CFG_BOOL)
			snprintf(flag, sizeof(flag), "--[no-]%s", o->name);
		else
			snprintf(flag, sizeof(flag), "--%s%s%s%s", o->name,
			         o->implicit ? "[=" : "=", mv, o->implicit ? "]" : "");
		usage_line(out, o->short_name, flag, o->help);
		env_name(o, var, sizeof(var));
		if (o->choices) {
			char choices[128];
			choices_text(o, choices, sizeof(choices));
			fprintf(out, "%37s%s", "", choices);
		} else {
			fprintf(out, "%37s%s", "", types[o->type].help);
		}
		if (bounded(o))
			fprintf(out, " in %" PRId64 "%s..%" PRId64 "%s", o->min, unit_of(o), o->max,
			        unit_of(o));
		fprintf(out, "; env %s; default %s", var, o->def ? o->def : "(none)");
		if (o->implicit && o->type != HL_CFG_BOOL)
			fprintf(out, "; bare flag means %s", o->implicit);
		fprintf(out, "\n");
	}
	usage_line(out, 'h', "--help", "Show this help and exit.");
	usage_line(out, 0, "--version", "Show the version and exit.");
	fprintf(out,
	        "\nEach option is taken from its flag, else its HEIRLOOM_* variable, else the\n"
	        "config file, else its default. The config file is --config PATH or\n"
	        "$HEIRLOOM_CONFIG, which must exist; otherwise %s/NAME.conf, with NAME\n"
	        "from --name (skipped if absent). In the file, a key in [%s] overrides\n"
	        "one in [heirloom], which overrides one above any section. [heirloom]\n"
	        "and the top are shared: another heirloom daemon's options are skipped\n"
	        "there; an unknown option anywhere is an error.\n",
	        cfg->config_dir ? cfg->config_dir : DEFAULT_CONFIG_DIR,
	        cfg->section ? cfg->section : "heirloom");
}

void
hl__cfg_dump(const struct hl_cfg *cfg, FILE *out)
{
	static const char *const src[] = { "unset", "default", "file", "env", "flag" };

	for (size_t i = 0; cfg->slots && i < nall(cfg); i++) {
		const struct hl_cfg_opt *o = opt_at(cfg, i);
		const struct hl_cfg_slot *s = &cfg->slots[i];
		const void *p = i == BI_NAME     ? (const void *)&cfg->name
		                : i == BI_CONFIG ? (const void *)&cfg->config_file
		                                 : o->dst;
		enum hl_cfg_source from = s->src;

		/* The default file has no option value, but was still chosen by default. */
		if (i == BI_CONFIG && from == HL_CFG_SRC_UNSET && cfg->config_file)
			from = HL_CFG_SRC_DEFAULT;
		fprintf(out, "%s = ", o->name);
		if (o->type == HL_CFG_STR)
			fprintf(out, "%s", *(char *const *)p ? *(char *const *)p : "(unset)");
		else if (from == HL_CFG_SRC_UNSET)
			fprintf(out, "(unset)");
		else if (o->type == HL_CFG_BOOL)
			fprintf(out, "%s", *(const bool *)p ? "true" : "false");
		else if (o->type == HL_CFG_MODE)
			fprintf(out, "%04o", *(const unsigned *)p);
		else
			fprintf(out, "%" PRId64 "%s", *(const int64_t *)p, unit_of(o));
		if (from == HL_CFG_SRC_FILE)
			fprintf(out, "  (file:%s:%u)\n", cfg->config_file, s->line);
		else
			fprintf(out, "  (%s)\n", src[from]);
	}
}

enum hl_cfg_source
hl__cfg_source(const struct hl_cfg *cfg, const char *name, unsigned *line)
{
	long i = cfg->slots ? find_opt(cfg, name, strlen(name), 0) : -1;

	if (line)
		*line = i >= 0 && cfg->slots[i].src == HL_CFG_SRC_FILE ? cfg->slots[i].line : 0;
	return i >= 0 ? cfg->slots[i].src : HL_CFG_SRC_UNSET;
}
