/* SPDX-License-Identifier: MIT */
/*
 * config.h: option resolution shared by the daemons (heirloom-keeper,
 * heirloom-worker). Each option comes from its command-line flag, else the
 * environment variable HEIRLOOM_<NAME>, else the INI config file, else its
 * default. This module only parses and reports: it never exits, aborts or
 * logs, so the daemon decides what an error means.
 *
 * Thread-safety: call hl__cfg_load() once at startup, before other threads
 * exist. It reads the environment and writes only the caller's variables.
 */
#ifndef HL_DAEMON_CONFIG_H
#define HL_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* How an option's text is parsed, and what its dst points to. */
enum hl_cfg_type {
	HL_CFG_STR,  /* char **: a malloc'd copy, freed by hl__cfg_free() */
	HL_CFG_INT,  /* int64_t *: decimal, checked against min..max */
	HL_CFG_BOOL, /* bool *: true/false, yes/no, on/off, 1/0 */
	HL_CFG_MS,   /* int64_t * in ms: "250ms", "30s", "2m", "1h"; a bare number is ms */
	HL_CFG_MODE, /* unsigned *: an octal file mode such as 0660, at most 07777 */
	HL_CFG_SIZE, /* int64_t * in bytes: optional K, M, G or T (any case), powers of 1024 */
};

/* Where an option's value came from, in increasing precedence. */
enum hl_cfg_source {
	HL_CFG_SRC_UNSET,   /* no source and no default: dst was not written */
	HL_CFG_SRC_DEFAULT, /* hl_cfg_opt.def */
	HL_CFG_SRC_FILE,    /* the config file, at a line */
	HL_CFG_SRC_ENV,     /* HEIRLOOM_<NAME> */
	HL_CFG_SRC_FLAG,    /* --name on the command line */
};

/*
 * One option, in a table the daemon owns and keeps for as long as the
 * struct hl_cfg that points to it. The name gives all three spellings:
 * "spawn-worker" is the flag --spawn-worker, the INI key spawn-worker and the
 * variable HEIRLOOM_SPAWN_WORKER (upper-cased, '-' becomes '_'). Names use
 * [a-z0-9-] only; "name", "config", "help" and "version" are taken.
 */
struct hl_cfg_opt {
	const char *name;
	char short_name; /* 'v' gives -v VALUE or -vVALUE; 0 for none */
	enum hl_cfg_type type;
	const char *def;     /* default as text, parsed like any source; NULL = unset */
	const char *help;    /* one line for --help */
	const char *metavar; /* placeholder in --help, e.g. "PATH"; NULL = from type */
	int64_t min, max;    /* INT/MS/SIZE bounds, inclusive; ignored when both are 0 */
	/*
	 * Non-NULL: the flag may be given bare and then means this value; an
	 * explicit value must be attached, --spawn-worker=PATH, because a
	 * separate word would be ambiguous with a positional argument. Bool
	 * flags always work bare (and as --no-NAME) and ignore this.
	 */
	const char *implicit;
	/* STR only, or NULL: the words the value must be one of
	 * (NULL-terminated); --help lists them. */
	const char *const *choices;
	void *dst; /* see enum hl_cfg_type; written only if hl__cfg_load() succeeds */
};

/*
 * Every option name of heirloom-keeper and heirloom-worker
 * (NULL-terminated), for hl_cfg.shared_names: the sections both daemons
 * read may hold options of either. A daemon whose table has an option
 * missing here fails to load any configuration (check_table), so the list
 * cannot fall behind; test_config checks it holds nothing else.
 */
extern const char *const hl__daemon_option_names[];

/* What the command line asked for beyond the options. */
enum hl_cfg_request {
	HL_CFG_RUN,     /* go on and start the daemon */
	HL_CFG_HELP,    /* --help or -h: usage was printed, exit 0 */
	HL_CFG_VERSION, /* --version: the version was printed, exit 0 */
};

struct hl_cfg_slot; /* private to config.c */

/*
 * The caller fills the inputs (a designated initializer is enough) and calls
 * hl__cfg_load(); the outputs are valid after it returns 0, until
 * hl__cfg_free(). Only one thread may use a struct hl_cfg.
 */
struct hl_cfg {
	/* Inputs. */
	const char *prog;           /* "heirloom-keeper", for --help and --version */
	const char *version;        /* printed by --version */
	const char *summary;        /* one line under the usage line, or NULL */
	const char *args_usage;     /* positional arguments in the usage line, or NULL */
	const char *section;        /* this program's INI section, e.g. "keeper" */
	const char *const *foreign; /* NULL-terminated sections of sibling programs that
	                               share the file, skipped unread; may be NULL */
	const char *config_dir;     /* NULL means /etc/heirloom; tests point it elsewhere */
	FILE *out;                  /* where --help and --version print; NULL = stdout */

	/* NULL-terminated option names any sibling knows (for the daemons,
	 * hl__daemon_option_names): skipped in the shared sections, named in
	 * the error in our own. May be NULL. */
	const char *const *shared_names;
	const struct hl_cfg_opt *opts;
	size_t nopts;

	/* Outputs. */
	enum hl_cfg_request request;
	int argind;        /* argv[argind..argc-1] are the positional arguments */
	char *name;        /* instance name: --name, HEIRLOOM_NAME, else "default" */
	char *config_file; /* the file that was read, or NULL if none was */

	/* Private: where each value came from, for hl__cfg_dump(). */
	struct hl_cfg_slot *slots;
};

/*
 * Resolve every option in cfg->opts, and the built-in --name and --config,
 * from argv, the environment, the config file and the defaults.
 *
 * Flags end at "--" or at the first word that is not an option (a lone "-"
 * is positional); cfg->argind points past them. Values are --opt VALUE,
 * --opt=VALUE, -s VALUE or -sVALUE; bool flags are --opt, --no-opt or
 * --opt=BOOL. A repeated flag keeps its last value. An empty HEIRLOOM_*
 * variable counts as unset. Every source is validated even when a higher one
 * overrides it, so a bad line in the file never lies in wait.
 *
 * The config file is --config PATH or HEIRLOOM_CONFIG, which must exist, else
 * CONFIG_DIR/NAME.conf, skipped if absent. Keys may sit at the top level, in
 * [heirloom] or in [<cfg->section>]; a later one of these three overrides an
 * earlier one, and a key twice in the same one is an error. The first two
 * are shared: a key there that is not ours but is in cfg->shared_names (a
 * sibling daemon's option) is skipped unchecked; any other unknown key, in
 * any section, is an error naming the file and line.
 *
 * On --help or --version, prints to cfg->out, sets cfg->request and returns
 * 0 without resolving anything else (so help works with a broken config).
 *
 * Returns 0, or a negative errno with a one-line message in err (which may be
 * NULL if errlen is 0): -EINVAL for a bad flag, variable, file line or option
 * table, -ENOENT for a missing explicit config file, another -errno if the
 * file cannot be read, -ENOMEM. On failure no dst was written and there is
 * nothing to free. On success, call hl__cfg_free() once done, and before
 * loading into the same struct again.
 */
int hl__cfg_load(struct hl_cfg *cfg, int argc, char **argv, char *err, size_t errlen);

/* Free the strings hl__cfg_load() handed out (STR dsts become NULL) and the
 * private state. Safe on a struct whose load failed or that is all zero. */
void hl__cfg_free(struct hl_cfg *cfg);

/* Print the usage: every option with its flags, type, environment variable,
 * default and help, then the rule for finding the config file. */
void hl__cfg_usage(const struct hl_cfg *cfg, FILE *out);

/* Print "name = value  (source)" for every option after a successful load,
 * where source is flag, env, file:PATH:LINE, default or unset. */
void hl__cfg_dump(const struct hl_cfg *cfg, FILE *out);

/* Where option `name` got its value after a successful load; for a file,
 * *line is set to its line (else 0), the path being cfg->config_file.
 * Returns HL_CFG_SRC_UNSET for an unknown name. */
enum hl_cfg_source hl__cfg_source(const struct hl_cfg *cfg, const char *name, unsigned *line);

#endif /* HL_DAEMON_CONFIG_H */
