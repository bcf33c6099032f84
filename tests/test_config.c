/* SPDX-License-Identifier: MIT */
/*
 * test_config.c: the daemon option resolver (daemon/common/config.c), from
 * flags, HEIRLOOM_* variables and a config file in a fresh mkdtemp()
 * directory per test. Every test starts with none of our variables set.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define SENTINEL (-7) /* in every int variable before a load: shows what was written */

static const char *const env_vars[] = {
	"HEIRLOOM_SHARDS", "HEIRLOOM_FOREGROUND",   "HEIRLOOM_SOCKET",       "HEIRLOOM_TIMEOUT",
	"HEIRLOOM_MODE",   "HEIRLOOM_SEGMENT_SIZE", "HEIRLOOM_SPAWN_WORKER", "HEIRLOOM_LABEL",
	"HEIRLOOM_NAME",   "HEIRLOOM_CONFIG",
};

static const char *const sibling_sections[] = { "worker", NULL };

struct fixture {
	char dir[64];
	char path[128]; /* dir/default.conf */
	struct hl_cfg cfg;
	struct hl_cfg_opt opts[8];
	int64_t shards, timeout_ms, segment_size;
	bool foreground;
	unsigned mode;
	char *socket, *spawn_worker, *label;
	char err[512];
	char *out_buf;
	size_t out_len;
	FILE *out;
};

static void
clear_env(void)
{
	for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
		unsetenv(env_vars[i]);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	clear_env();
	strcpy(f->dir, "/tmp/hl-test-config-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/default.conf", f->dir);
	f->shards = f->timeout_ms = f->segment_size = SENTINEL;
	f->mode = 0;
	f->out = open_memstream(&f->out_buf, &f->out_len);
	if (!f->out)
		return -1;

	struct hl_cfg_opt opts[] = {
		{ .name = "shards",
		  .short_name = 's',
		  .type = HL_CFG_INT,
		  .def = "16",
		  .min = 1,
		  .max = 1024,
		  .help = "Number of shards.",
		  .dst = &f->shards },
		{ .name = "foreground",
		  .short_name = 'f',
		  .type = HL_CFG_BOOL,
		  .def = "false",
		  .help = "Do not detach.",
		  .dst = &f->foreground },
		{ .name = "socket",
		  .type = HL_CFG_STR,
		  .def = "/run/heirloom/sock",
		  .metavar = "PATH",
		  .help = "Control socket.",
		  .dst = &f->socket },
		{ .name = "timeout",
		  .type = HL_CFG_MS,
		  .def = "30s",
		  .min = 1,
		  .max = 3600000,
		  .help = "Client timeout.",
		  .dst = &f->timeout_ms },
		{ .name = "mode",
		  .type = HL_CFG_MODE,
		  .def = "0660",
		  .help = "Segment file mode.",
		  .dst = &f->mode },
		{ .name = "segment-size",
		  .type = HL_CFG_SIZE,
		  .def = "64M",
		  .min = 4096,
		  .max = 1ll << 40,
		  .help = "Segment size.",
		  .dst = &f->segment_size },
		{ .name = "spawn-worker",
		  .type = HL_CFG_STR,
		  .implicit = "/usr/lib/heirloom/worker",
		  .metavar = "PATH",
		  .help = "Start a worker.",
		  .dst = &f->spawn_worker },
		{ .name = "label", .type = HL_CFG_STR, .help = "Free text.", .dst = &f->label },
	};
	_Static_assert(sizeof(opts) == sizeof(f->opts), "fixture holds the whole table");
	memcpy(f->opts, opts, sizeof(opts));
	f->cfg = (struct hl_cfg){ .prog = "heirloom-keeper",
		                  .version = "0.1.0",
		                  .section = "keeper",
		                  .foreign = sibling_sections,
		                  .config_dir = f->dir,
		                  .out = f->out,
		                  .opts = f->opts,
		                  .nopts = sizeof(opts) / sizeof(opts[0]) };
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	static const char *const names[] = { "default.conf", "other.conf", "explicit.conf" };
	char p[160];

	hl__cfg_free(&f->cfg);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", f->dir, names[i]);
		unlink(p);
	}
	rmdir(f->dir);
	fclose(f->out);
	free(f->out_buf);
	free(f);
	clear_env();
	return 0;
}

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

/* Load from a NULL-terminated argv whose argv[0] is the program. */
static int
load(struct fixture *f, char **argv)
{
	int argc = 0;

	while (argv[argc])
		argc++;
	return hl__cfg_load(&f->cfg, argc, argv, f->err, sizeof(f->err));
}

/* Load with default.conf holding text and no flags: expect -EINVAL and the
 * message "<path>:<where>". */
static void
assert_file_error(struct fixture *f, const char *text, const char *where)
{
	char *argv[] = { "keeper", NULL };
	char want[256];

	write_file(f->path, text);
	assert_int_equal(load(f, argv), -EINVAL);
	snprintf(want, sizeof(want), "%s:%s", f->path, where);
	assert_string_equal(f->err, want);
}

static const char *
output(struct fixture *f)
{
	fflush(f->out);
	return f->out_buf;
}

static void
test_flag_overrides_env_and_file(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "--shards", "2", "--timeout=5s", NULL };

	write_file(f->path, "shards = 4\ntimeout = 1m\n");
	setenv("HEIRLOOM_SHARDS", "8", 1);
	setenv("HEIRLOOM_TIMEOUT", "2m", 1);
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 2);
	assert_int_equal(f->timeout_ms, 5000);
	assert_int_equal(hl__cfg_source(&f->cfg, "shards", NULL), HL_CFG_SRC_FLAG);
	assert_int_equal(hl__cfg_source(&f->cfg, "timeout", NULL), HL_CFG_SRC_FLAG);
}

static void
test_env_overrides_file(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };

	write_file(f->path, "shards = 4\nsocket = /file/sock\n");
	setenv("HEIRLOOM_SHARDS", "8", 1);
	setenv("HEIRLOOM_SOCKET", "/env/sock", 1);
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 8);
	assert_string_equal(f->socket, "/env/sock");
	assert_int_equal(hl__cfg_source(&f->cfg, "socket", NULL), HL_CFG_SRC_ENV);
}

static void
test_file_overrides_default(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };
	unsigned line = 0;

	write_file(f->path, "# comment\n\nshards = 4\nmode = 0640\n");
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 4);
	assert_int_equal(f->mode, 0640);
	assert_int_equal(hl__cfg_source(&f->cfg, "shards", &line), HL_CFG_SRC_FILE);
	assert_int_equal(line, 3);
	assert_string_equal(f->cfg.config_file, f->path);
}

static void
test_default_used_when_nothing_set(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };

	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 16);
	assert_false(f->foreground);
	assert_string_equal(f->socket, "/run/heirloom/sock");
	assert_int_equal(f->timeout_ms, 30000);
	assert_int_equal(f->mode, 0660);
	assert_int_equal(f->segment_size, 64ll << 20);
	assert_null(f->label);
	assert_string_equal(f->cfg.name, "default");
	assert_null(f->cfg.config_file); /* absent default file is skipped */
	assert_int_equal(hl__cfg_source(&f->cfg, "shards", NULL), HL_CFG_SRC_DEFAULT);
	assert_int_equal(hl__cfg_source(&f->cfg, "label", NULL), HL_CFG_SRC_UNSET);
}

static void
test_unknown_file_key_names_file_and_line(void **state)
{
	struct fixture *f = *state;

	/* Only the first bad line is reported. */
	assert_file_error(f, "shards = 4\n\nbogus = 1\nworse = 2\n", "3: unknown option 'bogus'");
	assert_int_equal(f->shards, SENTINEL); /* a failed load writes nothing */
	assert_null(f->socket);
}

static void
test_malformed_value_names_file_and_line(void **state)
{
	struct fixture *f = *state;

	assert_file_error(f, "[keeper]\nshards = abc\n",
	                  "2: option 'shards': 'abc' is not an integer");
}

static void
test_unknown_section_names_file_and_line(void **state)
{
	struct fixture *f = *state;

	assert_file_error(f, "[worker]\nanything = goes\n[keeeper]\nshards = 4\n",
	                  "4: unknown section [keeeper]");
}

static void
test_syntax_error_names_file_and_line(void **state)
{
	struct fixture *f = *state;

	assert_file_error(f, "shards = 4\nno equals sign here\nbogus = 1\n", "2: syntax error");
}

static void
test_first_bad_line_is_reported_when_key_error_precedes_syntax_error(void **state)
{
	struct fixture *f = *state;

	assert_file_error(f, "bogus = 1\n[unclosed\n", "1: unknown option 'bogus'");
}

static void
test_overlong_line_names_file_and_line(void **state)
{
	struct fixture *f = *state;
	char text[600];

	snprintf(text, sizeof(text), "shards = 4\nsocket = /%0500d\n", 0);
	assert_file_error(f, text, "2: line longer than 198 bytes");
}

static void
test_program_section_overrides_heirloom_and_top_level(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };
	unsigned line = 0;

	write_file(f->path, "[keeper]\nshards = 4\n[heirloom]\nshards = 3\nmode = 0600\n"
	                    "[worker]\nthreads = 9\n");
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 4);
	assert_int_equal(f->mode, 0600);
	assert_int_equal(hl__cfg_source(&f->cfg, "shards", &line), HL_CFG_SRC_FILE);
	assert_int_equal(line, 2);
}

static void
test_key_set_twice_in_one_section_is_error(void **state)
{
	struct fixture *f = *state;

	assert_file_error(f, "[keeper]\nshards = 4\nshards = 5\n",
	                  "3: option 'shards' is set again (first at line 2)");
}

static void
test_indented_keys_are_separate_keys(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };

	write_file(f->path, "[keeper]\n    shards = 4\n    timeout = 5s\n");
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 4);
	assert_int_equal(f->timeout_ms, 5000);
}

static void
test_name_and_config_cannot_be_set_in_file(void **state)
{
	struct fixture *f = *state;

	assert_file_error(f, "name = other\n",
	                  "1: option 'name' cannot be set in a config file (it chooses the file)");
}

static void
test_bad_file_value_is_error_even_when_flag_overrides(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "--shards", "2", NULL };

	write_file(f->path, "shards = lots\n");
	assert_int_equal(load(f, argv), -EINVAL);
	assert_non_null(strstr(f->err, ":1: option 'shards': 'lots' is not an integer"));
}

static void
test_env_parse_error_names_variable(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };

	setenv("HEIRLOOM_SHARDS", "abc", 1);
	assert_int_equal(load(f, argv), -EINVAL);
	assert_string_equal(f->err, "environment HEIRLOOM_SHARDS: 'abc' is not an integer");
}

static void
test_empty_env_variable_counts_as_unset(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };

	setenv("HEIRLOOM_SHARDS", "", 1);
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 16);
}

static void
test_unknown_flag_is_error(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "--shards", "2", "--bogus=3", NULL };
	char *short_argv[] = { "keeper", "-x", NULL };

	assert_int_equal(load(f, argv), -EINVAL);
	assert_string_equal(f->err, "unknown option '--bogus' (see --help)");
	assert_int_equal(f->shards, SENTINEL);
	assert_int_equal(load(f, short_argv), -EINVAL);
	assert_string_equal(f->err, "unknown option '-x' (see --help)");
}

static void
test_flag_without_value_is_error(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "--shards", NULL };

	assert_int_equal(load(f, argv), -EINVAL);
	assert_string_equal(f->err, "--shards: missing value (see --help)");
}

static void
test_flag_value_out_of_range_names_bounds(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "-s", "0", NULL };

	assert_int_equal(load(f, argv), -EINVAL);
	assert_string_equal(f->err, "-s: '0' is out of range 1..1024");
}

static void
test_flag_value_forms_are_equivalent(void **state)
{
	static const char *const forms[][3] = {
		{ "--shards", "5", NULL }, { "--shards=5", NULL, NULL },  { "-s", "5", NULL },
		{ "-s5", NULL, NULL },     { "--shards=9", "-s5", NULL }, /* last one wins */
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		char *argv[] = { "keeper", (char *)forms[i][0], (char *)forms[i][1], NULL };
		assert_int_equal(load(f, argv), 0);
		assert_int_equal(f->shards, 5);
		hl__cfg_free(&f->cfg);
		f->shards = SENTINEL;
	}
}

static void
test_explicit_missing_config_file_is_enoent(void **state)
{
	struct fixture *f = *state;
	char missing[160];
	char *argv[] = { "keeper", "--config", missing, NULL };
	char *bare[] = { "keeper", NULL };

	snprintf(missing, sizeof(missing), "%s/explicit.conf", f->dir);
	assert_int_equal(load(f, argv), -ENOENT);
	assert_non_null(strstr(f->err, missing));
	assert_non_null(strstr(f->err, "No such file"));

	setenv("HEIRLOOM_CONFIG", missing, 1);
	assert_int_equal(load(f, bare), -ENOENT);

	write_file(missing, "shards = 12\n");
	assert_int_equal(load(f, bare), 0);
	assert_int_equal(f->shards, 12);
	assert_string_equal(f->cfg.config_file, missing);
}

static void
test_name_selects_config_file(void **state)
{
	struct fixture *f = *state;
	char other[160];
	char *argv[] = { "keeper", "--name", "other", NULL };
	char *bare[] = { "keeper", NULL };
	char *escape[] = { "keeper", "--name=../etc", NULL };
	char *hidden[] = { "keeper", "--name=.hidden", NULL };

	snprintf(other, sizeof(other), "%s/other.conf", f->dir);
	write_file(f->path, "shards = 3\n");
	write_file(other, "shards = 7\n");
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 7);
	assert_string_equal(f->cfg.name, "other");
	hl__cfg_free(&f->cfg);

	setenv("HEIRLOOM_NAME", "other", 1);
	assert_int_equal(load(f, bare), 0);
	assert_string_equal(f->cfg.config_file, other);
	hl__cfg_free(&f->cfg);

	assert_int_equal(load(f, escape), -EINVAL);
	assert_non_null(strstr(f->err, "--name: '../etc' is not a valid instance name"));
	assert_int_equal(load(f, hidden), -EINVAL);
}

static void
test_duration_and_size_suffixes(void **state)
{
	static const struct {
		const char *flag;
		int64_t want; /* -1: rejected */
		bool is_size;
	} cases[] = {
		{ "--timeout=250ms", 250, false },
		{ "--timeout=30s", 30000, false },
		{ "--timeout=2m", 120000, false },
		{ "--timeout=1h", 3600000, false },
		{ "--timeout=1500", 1500, false },
		{ "--timeout=5x", -1, false },
		{ "--timeout=1.5s", -1, false },
		{ "--timeout=-1s", -1, false },
		{ "--timeout=", -1, false },
		{ "--timeout=99999999999999999999s", -1, false },
		{ "--segment-size=4096", 4096, true },
		{ "--segment-size=64K", 64ll << 10, true },
		{ "--segment-size=16m", 16ll << 20, true },
		{ "--segment-size=2G", 2ll << 30, true },
		{ "--segment-size=1T", 1ll << 40, true },
		{ "--segment-size=2T", -1, true }, /* above max */
		{ "--segment-size=10000000000G", -1, true },
		{ "--segment-size=1KB", -1, true },
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[] = { "keeper", (char *)cases[i].flag, NULL };
		int rc = load(f, argv);

		if (cases[i].want < 0) {
			assert_int_equal(rc, -EINVAL);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(cases[i].is_size ? f->segment_size : f->timeout_ms, cases[i].want);
		hl__cfg_free(&f->cfg);
	}
}

static void
test_bool_flag_forms(void **state)
{
	static const struct {
		const char *env, *flag;
		bool want;
	} cases[] = {
		{ NULL, "--foreground", true },
		{ "yes", "--no-foreground", false },
		{ NULL, "--foreground=off", false },
		{ NULL, "--foreground=YES", true },
		{ NULL, "-f", true },
		{ "on", NULL, true },
		{ "0", NULL, false },
		{ "true", "--foreground=0", false },
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[] = { "keeper", (char *)cases[i].flag, NULL };
		if (cases[i].env)
			setenv("HEIRLOOM_FOREGROUND", cases[i].env, 1);
		else
			unsetenv("HEIRLOOM_FOREGROUND");
		f->foreground = !cases[i].want;
		assert_int_equal(load(f, argv), 0);
		assert_int_equal(f->foreground, cases[i].want);
		hl__cfg_free(&f->cfg);
	}
	unsetenv("HEIRLOOM_FOREGROUND");
	char *bad[] = { "keeper", "--foreground=maybe", NULL };
	assert_int_equal(load(f, bad), -EINVAL);
	assert_string_equal(f->err, "--foreground: 'maybe' is not a boolean "
	                            "(true/false, yes/no, on/off, 1/0)");
	char *negated_value[] = { "keeper", "--no-foreground=1", NULL };
	assert_int_equal(load(f, negated_value), -EINVAL);
	assert_string_equal(f->err, "--no-foreground: takes no value (in '--no-foreground=1')");
}

static void
test_bare_optional_flag_gives_implicit_value(void **state)
{
	struct fixture *f = *state;
	char *bare[] = { "keeper", "--spawn-worker", "positional", NULL };
	char *given[] = { "keeper", "--spawn-worker=/opt/w", NULL };

	assert_int_equal(load(f, bare), 0);
	assert_string_equal(f->spawn_worker, "/usr/lib/heirloom/worker");
	assert_int_equal(f->cfg.argind, 2); /* the next word stays positional */
	hl__cfg_free(&f->cfg);
	assert_null(f->spawn_worker);

	assert_int_equal(load(f, given), 0);
	assert_string_equal(f->spawn_worker, "/opt/w");
}

static void
test_options_end_at_first_positional_or_double_dash(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "-s", "2", "file", "--foreground", NULL };
	char *dashdash[] = { "keeper", "--", "--shards", NULL };

	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->cfg.argind, 3);
	assert_int_equal(f->shards, 2);
	assert_false(f->foreground);
	hl__cfg_free(&f->cfg);

	assert_int_equal(load(f, dashdash), 0);
	assert_int_equal(f->cfg.argind, 2);
	assert_int_equal(f->shards, 16);
}

static void
test_help_lists_every_option_with_default(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "--shards", "2", "--help", NULL };
	char want[128];

	write_file(f->path, "this is not even INI\n"); /* help must not need the file */
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->cfg.request, HL_CFG_HELP);
	assert_int_equal(f->shards, SENTINEL);
	const char *out = output(f);
	for (size_t i = 0; i < f->cfg.nopts; i++) {
		const struct hl_cfg_opt *o = &f->opts[i];
		size_t n;

		assert_non_null(strstr(out, o->name));
		assert_non_null(strstr(out, o->help));
		n = (size_t)snprintf(want, sizeof(want), "env HEIRLOOM_");
		for (const char *p = o->name; *p; p++)
			want[n++] = *p == '-' ? '_' : (char)(*p - 'a' + 'A');
		want[n] = '\0';
		assert_non_null(strstr(out, want));
		snprintf(want, sizeof(want), "default %s", o->def ? o->def : "(none)");
		assert_non_null(strstr(out, want));
	}
	assert_non_null(strstr(out, "--[no-]foreground"));
	assert_non_null(strstr(out, "--spawn-worker[=PATH]"));
	assert_non_null(strstr(out, "--config=PATH"));
	assert_non_null(strstr(out, "env HEIRLOOM_NAME; default default"));
	snprintf(want, sizeof(want), "%s/NAME.conf", f->dir);
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "[keeper]"));

	char *short_help[] = { "keeper", "-h", NULL };
	assert_int_equal(load(f, short_help), 0);
	assert_int_equal(f->cfg.request, HL_CFG_HELP);
	char *help_value[] = { "keeper", "--help=me", NULL };
	assert_int_equal(load(f, help_value), -EINVAL);
	assert_string_equal(f->err, "--help: takes no value");
}

static void
test_version_prints_program_and_version(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "--version", NULL };

	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->cfg.request, HL_CFG_VERSION);
	assert_string_equal(output(f), "heirloom-keeper 0.1.0\n");
}

static void
test_dump_shows_value_and_source(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", "--shards=2", NULL };
	char want[256];

	write_file(f->path, "\nmode = 0640\n");
	setenv("HEIRLOOM_SOCKET", "/env/sock", 1);
	assert_int_equal(load(f, argv), 0);
	hl__cfg_dump(&f->cfg, f->out);
	const char *out = output(f);
	assert_non_null(strstr(out, "shards = 2  (flag)\n"));
	assert_non_null(strstr(out, "socket = /env/sock  (env)\n"));
	assert_non_null(strstr(out, "timeout = 30000ms  (default)\n"));
	assert_non_null(strstr(out, "label = (unset)  (unset)\n"));
	assert_non_null(strstr(out, "name = default  (default)\n"));
	snprintf(want, sizeof(want), "mode = 0640  (file:%s:2)\n", f->path);
	assert_non_null(strstr(out, want));
}

static void
test_bad_option_table_is_einval(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };

	f->opts[1].name = "shards";
	assert_int_equal(load(f, argv), -EINVAL);
	assert_non_null(strstr(f->err, "option table"));
	f->opts[1].name = "name"; /* taken by the built-in */
	assert_int_equal(load(f, argv), -EINVAL);
}

/* Our options plus two a sibling daemon has. */
static const char *const shared[] = { "shards",         "foreground", "socket",
	                              "timeout",        "mode",       "segment-size",
	                              "spawn-worker",   "label",      "stop-timeout",
	                              "slow-reader-ms", NULL };

static void
test_shared_sections_skip_sibling_options_only(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };

	f->cfg.shared_names = shared;
	write_file(f->path, "slow-reader-ms = x\n[heirloom]\nstop-timeout = 1s\nshards = 4\n");
	assert_int_equal(load(f, argv), 0);
	assert_int_equal(f->shards, 4);
	hl__cfg_free(&f->cfg);
	assert_file_error(f, "[heirloom]\nstop-timout = 1s\n", "2: unknown option 'stop-timout'");
	assert_file_error(f, "[keeper]\nslow-reader-ms = 1\n",
	                  "2: option 'slow-reader-ms' is not a keeper option (it belongs to "
	                  "another heirloom daemon: move it to its section or to [heirloom])");
	/* Without the list, a sibling's option is unknown like any other. */
	f->cfg.shared_names = NULL;
	assert_file_error(f, "[heirloom]\nstop-timeout = 1s\n", "2: unknown option 'stop-timeout'");
}

static void
test_option_missing_from_shared_names_is_table_error(void **state)
{
	struct fixture *f = *state;
	char *argv[] = { "keeper", NULL };
	static const char *const partial[] = { "shards", "foreground", NULL };

	f->cfg.shared_names = partial;
	assert_int_equal(load(f, argv), -EINVAL);
	assert_non_null(strstr(f->err, "'socket' is missing from the shared names"));
}

static void
test_choices_accept_only_their_words(void **state)
{
	struct fixture *f = *state;
	static const char *const words[] = { "err", "info", NULL };
	char *level = NULL;
	struct hl_cfg_opt opt = { .name = "level",
		                  .type = HL_CFG_STR,
		                  .def = "info",
		                  .choices = words,
		                  .help = "Level.",
		                  .dst = &level };
	struct hl_cfg cfg = { .prog = "p",
		              .section = "keeper",
		              .config_dir = f->dir,
		              .out = f->out,
		              .opts = &opt,
		              .nopts = 1 };
	char *ok[] = { "p", "--level", "err", NULL }, *bad[] = { "p", "--level=loud", NULL };

	assert_int_equal(hl__cfg_load(&cfg, 3, ok, f->err, sizeof(f->err)), 0);
	assert_string_equal(level, "err");
	hl__cfg_free(&cfg);
	assert_int_equal(hl__cfg_load(&cfg, 2, bad, f->err, sizeof(f->err)), -EINVAL);
	assert_string_equal(f->err, "--level: 'loud' is not one of err, info");
	assert_null(level);
	char *help[] = { "p", "--help", NULL };
	assert_int_equal(hl__cfg_load(&cfg, 2, help, f->err, sizeof(f->err)), 0);
	assert_non_null(strstr(output(f), "one of err, info; env HEIRLOOM_LEVEL; default info"));
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_flag_overrides_env_and_file),
		T(test_env_overrides_file),
		T(test_file_overrides_default),
		T(test_default_used_when_nothing_set),
		T(test_unknown_file_key_names_file_and_line),
		T(test_malformed_value_names_file_and_line),
		T(test_unknown_section_names_file_and_line),
		T(test_syntax_error_names_file_and_line),
		T(test_first_bad_line_is_reported_when_key_error_precedes_syntax_error),
		T(test_overlong_line_names_file_and_line),
		T(test_program_section_overrides_heirloom_and_top_level),
		T(test_key_set_twice_in_one_section_is_error),
		T(test_indented_keys_are_separate_keys),
		T(test_name_and_config_cannot_be_set_in_file),
		T(test_bad_file_value_is_error_even_when_flag_overrides),
		T(test_env_parse_error_names_variable),
		T(test_empty_env_variable_counts_as_unset),
		T(test_unknown_flag_is_error),
		T(test_flag_without_value_is_error),
		T(test_flag_value_out_of_range_names_bounds),
		T(test_flag_value_forms_are_equivalent),
		T(test_explicit_missing_config_file_is_enoent),
		T(test_name_selects_config_file),
		T(test_duration_and_size_suffixes),
		T(test_bool_flag_forms),
		T(test_bare_optional_flag_gives_implicit_value),
		T(test_options_end_at_first_positional_or_double_dash),
		T(test_help_lists_every_option_with_default),
		T(test_version_prints_program_and_version),
		T(test_dump_shows_value_and_source),
		T(test_bad_option_table_is_einval),
		T(test_shared_sections_skip_sibling_options_only),
		T(test_option_missing_from_shared_names_is_table_error),
		T(test_choices_accept_only_their_words),
	};
#undef T
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
