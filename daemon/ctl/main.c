/* SPDX-License-Identifier: MIT */
/*
 * main.c: heirloomctl's command line: global options, the command table,
 * per-command option parsing, --help texts, and the error reporting every
 * command shares. It must never touch the segment itself: the commands do.
 */
#include "ctl.h"

#include "heirloom/heirloom.h"
#include "layout.h"
#include "out.h"
#include "trust.h"
#include "view.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const top_help =
        "Usage: heirloomctl [--name NAME] [--json] COMMAND [ARGS...]\n"
        "Inspect and use a heirloom table: the shared-memory segment /heirloom.NAME.\n"
        "\n"
        "Global options (accepted before or after the command):\n"
        "  --name NAME   segment name; default $HEIRLOOM_NAME, else \"default\"\n"
        "                (metrics and stats --prometheus take several)\n"
        "  --json        machine-readable output: one JSON document on stdout\n"
        "                (watch: one JSON object per line)\n"
        "  -h, --help    this text; 'heirloomctl COMMAND --help' for a command\n"
        "  --version     print the version\n"
        "\n"
        "Commands that only read the segment (no worker needed, no endpoint taken):\n"
        "  status                      segment, capacities, owner, counts, recent log\n"
        "  stats [--prometheus]        every counter and the dispatch latency histogram\n"
        "  metrics [--listen ADDR]     Prometheus metrics of one or more segments (--name\n"
        "                              repeated), on stdout or served over HTTP\n"
        "  keys                        every key with its revision\n"
        "  inspect KEY                 a key's value length, revision and observers\n"
        "  get KEY                     write KEY's value, raw, to stdout\n"
        "  get --prefix P              keys starting with P: revisions and values\n"
        "  observers [--pid PID]       observers (of process PID)\n"
        "  endpoints                   endpoints in use: state, pid, queued bytes\n"
        "  top [--interval MS]         a live view: rates, the busiest keys and endpoints\n"
        "  segment inspect             validate the object, show its header fields\n"
        "  size [CAPACITY OPTIONS]     the segment's size for given capacities (creates\n"
        "                              nothing; see 'heirloomctl size --help')\n"
        "\n"
        "Commands that go through the worker (they wait --timeout for one to serve):\n"
        "  set KEY VALUE [--meta M]    publish and wait until the worker applied it\n"
        "      [--if-rev R]            ... only if KEY is at revision R (exit 5 if not)\n"
        "  set KEY - [...]             the same, with the value read from stdin (binary)\n"
        "  del KEY [--if-rev R]        delete KEY (only if at revision R)\n"
        "  watch KEY [--count N]       one line per change of KEY\n"
        "      [--filter put|delete] [--no-old]\n"
        "  watch --prefix P [...]      one line per change of any key starting with P\n"
        "      [--rev R]               ... first every change after revision R, from\n"
        "                              the history (exit 8 if it no longer reaches R)\n"
        "\n"
        "  segment remove --force      shm_unlink the object (see its --help)\n"
        "  snapshot                    have the keeper write a snapshot to its state\n"
        "                              directory now (--durability snapshot or log)\n"
        "  upgrade [--worker PATH]     replace the serving worker with a new binary,\n"
        "      [--timeout MS]          through the keeper; rolls back on failure\n"
        "\n"
        "Exit status:\n"
        "  0  success\n"
        "  1  no such key (get, del, inspect)\n"
        "  2  usage error\n"
        "  3  the segment is missing or unusable (not a heirloom segment, another\n"
        "     layout version, truncated, corrupt, no permission)\n"
        "  4  the request failed (no worker, worker error, timeout, refused)\n"
        "  5  set/del --if-rev: KEY is at another revision (printed); nothing changed\n"
        "  6  upgrade: the new worker failed (start, hand-over or recovery); rolled\n"
        "     back, the previous binary serves\n"
        "  7  upgrade: refused before anything changed (another segment layout\n"
        "     version, no supervised worker serving, an upgrade in progress)\n"
        "  8  watch --rev: the history no longer reaches R (the oldest revision to\n"
        "     resume from is printed)\n"
        "\n"
        "Whose segment it reads: root's, your own, or a system user's (uid <= 999)\n"
        "whose group you are in and that others cannot write; $HEIRLOOM_OWNER names\n"
        "others (USER or :GROUP, comma-separated) and then replaces the last rule.\n"
        "Any other owner's segment is refused (exit 3, HL_EUNTRUSTED); 'segment\n"
        "inspect' shows its owner and 'segment remove' removes it.\n"
        "\n"
        "Errors go to stderr as \"heirloomctl: ...\"; with --json, stdout also gets\n"
        "{\"error\": NAME, \"code\": N, \"message\": TEXT, \"exit_code\": N}, where NAME is\n"
        "the error's symbolic name (ENOENT, HL_EBADMAGIC, ...) or \"usage\".\n"
        "\n"
        "Keys and values are binary. Text output writes printable ASCII and valid\n"
        "UTF-8 as is, backslash as \\\\, newline, tab and carriage return as \\n, \\t\n"
        "and \\r, and every other byte as \\xNN (get writes the raw bytes). JSON\n"
        "output escapes control characters (\\n, \\u0001, \\u007f, \\u0085 ...) and\n"
        "writes each byte that is not valid UTF-8 as U+FFFD; when that happened, a\n"
        "sibling member \"<name>_hex\" holds the exact bytes in hex.\n";

struct cmd {
	const char *name;
	int (*run)(struct ctl *, const struct ctl_args *);
	int min_pos, max_pos;
	struct ctl_opt opts[CTL_MAX_OPTS];
	const char *help;
};

static const struct cmd cmds[] = {
	{ .name = "status",
	  .run = ctl_cmd_status,
	  .min_pos = 0,
	  .max_pos = 0,
	  .help = "Usage: heirloomctl [--name NAME] [--json] status\n"
	          "Show the segment (name, size, layout version), its capacities, the owner\n"
	          "record (role, pid, epoch, whether the pid is alive), the keeper, whether a\n"
	          "worker serves, hand-offs, reattaches, the last recovery, what is in use\n"
	          "and the last records of the segment's log (worker exits, hand-backs, bad\n"
	          "clients). Also: what each capacity costs of the segment's size\n"
	          "(size_bytes; all of it is reserved in /dev/shm), requests refused because\n"
	          "a pool was full (pools_full), and the worker's descriptors: its limit, how\n"
	          "many clients it can watch with a pidfd, how many it watches by polling\n"
	          "(descriptors). Reads the segment only: works with no worker running.\n" },
	{ .name = "stats",
	  .run = ctl_cmd_stats,
	  .min_pos = 0,
	  .max_pos = 0,
	  .opts = { { "prometheus", 0 } },
	  .help = "Usage: heirloomctl [--name NAME]... [--json] stats [--prometheus]\n"
	          "Print every counter, the current counts and the dispatch latency\n"
	          "histogram (publish applied -> last observer's event written) with the\n"
	          "sum of the latencies.\n"
	          "  --prometheus  the Prometheus text exposition format, as 'heirloomctl\n"
	          "                metrics' writes it (see its --help): every sample labelled\n"
	          "                segment=\"NAME\"; --name may be repeated.\n" },
	{ .name = "metrics",
	  .run = ctl_cmd_metrics,
	  .min_pos = 0,
	  .max_pos = 0,
	  .opts = { { "listen", 1 } },
	  .help = "Usage: heirloomctl [--name NAME]... [--json] metrics [--listen ADDR]\n"
	          "The Prometheus text exposition format (version 0.0.4) of every segment\n"
	          "named (--name may be repeated), in one exposition: each family's HELP and\n"
	          "TYPE once, every sample labelled segment=\"NAME\". Counters are\n"
	          "heirloom_*_total; heirloom_dispatch_latency_seconds is a histogram\n"
	          "(_bucket, _sum, _count); heirloom_build_info{version, layout_version} is 1;\n"
	          "heirloom_up{segment} is 1 for a segment that could be read.\n"
	          "Without --listen: written to stdout (for a node_exporter textfile); every\n"
	          "segment must be readable, else nothing is written and exit 3.\n"
	          "  --listen ADDR  serve it over HTTP at /metrics until SIGINT or SIGTERM, a\n"
	          "                fresh reading at every scrape (a segment that cannot be read\n"
	          "                then has heirloom_up 0 and nothing else). ADDR is PORT (on\n"
	          "                127.0.0.1: this machine only), HOST:PORT or [IPV6]:PORT;\n"
	          "                0.0.0.0:PORT or [::]:PORT serve every interface. Port 0 picks\n"
	          "                a free one. Prints \"serving URL\" (--json: {\"url\"}) once\n"
	          "                it listens; a port in use is exit 4.\n"
	          "Reads the segments only: works with no worker running.\n" },
	{ .name = "keys",
	  .run = ctl_cmd_keys,
	  .min_pos = 0,
	  .max_pos = 0,
	  .help = "Usage: heirloomctl [--name NAME] [--json] keys\n"
	          "List every key that has a value, sorted by its bytes: \"KEY<TAB>REVISION\"\n"
	          "per line; --json: an array of {\"key\", \"revision\"}.\n" },
	{ .name = "inspect",
	  .run = ctl_cmd_inspect,
	  .min_pos = 1,
	  .max_pos = 1,
	  .help = "Usage: heirloomctl [--name NAME] [--json] inspect KEY\n"
	          "Show KEY's value length and revision and its observers: id, pid, whether\n"
	          "the process is alive, age, bytes queued in its event ring, events dropped\n"
	          "for lag and the last revision delivered. Exit 1 if there is no such key.\n" },
	{ .name = "get",
	  .run = ctl_cmd_get,
	  .min_pos = 0,
	  .max_pos = 1,
	  .opts = { { "rev", 0 }, { "prefix", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] get KEY [--rev]\n"
	          "       heirloomctl [--name NAME] [--json] get --prefix PREFIX\n"
	          "--prefix: every key starting with PREFIX that has a value, in byte order,\n"
	          "one line each: KEY REVISION VALUE (escaped as described in 'heirloomctl\n"
	          "--help'); --json: an array of {\"key\", \"value\", \"length\",\n"
	          "\"revision\"}. Exit 0 also when no key matches.\n"
	          "Write KEY's current value, raw, to stdout (no newline added). --json:\n"
	          "{\"key\", \"value\", \"length\", \"revision\"}. Exit 1 if there is no such "
	          "key.\n"
	          "  --rev   write the key's revision instead (decimal, newline), the one\n"
	          "          to give set/del --if-rev; 0 (and exit 1) when it has no value\n" },
	{ .name = "observers",
	  .run = ctl_cmd_observers,
	  .min_pos = 0,
	  .max_pos = 0,
	  .opts = { { "pid", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] observers [--pid PID]\n"
	          "List the observers in the segment (only those whose endpoint belongs to\n"
	          "process PID with --pid): id, pid, alive, endpoint, key, prefix (true:\n"
	          "the key is a prefix, HL_OBSERVE_PREFIX), filter (all, put or delete),\n"
	          "delivered revision (a prefix observer's: the one it started at),\n"
	          "dropped, age.\n" },
	{ .name = "endpoints",
	  .run = ctl_cmd_endpoints,
	  .min_pos = 0,
	  .max_pos = 0,
	  .help = "Usage: heirloomctl [--name NAME] [--json] endpoints\n"
	          "List the endpoints in use: index, state (active, dead, banned, or free\n"
	          "while claimed but not yet adopted by a worker), pid, alive, incarnation,\n"
	          "observers held, when it was attached, and the bytes queued per shard in\n"
	          "its request and event rings (\"-\"/null when the client's cursor is\n"
	          "impossible).\n" },
	{ .name = "top",
	  .run = ctl_cmd_top,
	  .min_pos = 0,
	  .max_pos = 0,
	  .opts = { { "interval", 1 }, { "count", 1 }, { "limit", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] top [--interval MS] [--count N]\n"
	          "                  [--limit K]\n"
	          "A live view, refreshed every --interval MS (default 1000) until Ctrl-C or\n"
	          "--count frames: rates per second (publishes, skipped, deletes,\n"
	          "notifications, lag drops), the K busiest keys (changes/s, from each key's\n"
	          "sequence lock: a delete counts twice) and endpoints (ring bytes/s, events\n"
	          "queued). --json: one object per frame, one per line. Read-only.\n" },
	{ .name = "set",
	  .run = ctl_cmd_set,
	  .min_pos = 2,
	  .max_pos = 2,
	  .opts = { { "meta", 1 }, { "timeout", 1 }, { "if-rev", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] set KEY VALUE|- [--meta M] [--timeout "
	          "MS]\n"
	          "                  [--if-rev R]\n"
	          "Publish VALUE under KEY (with metadata M for the observers) and wait until\n"
	          "the worker applied it, so that errors such as a full table (ENOSPC) or an\n"
	          "oversized value (EMSGSIZE) are reported. Waits up to --timeout MS\n"
	          "(default 5000) for a worker to serve and to apply; exit 4 otherwise.\n"
	          "  --if-rev R  compare-and-set: only if KEY is at revision R (0: only if\n"
	          "              it has no value). Prints the new revision (--json:\n"
	          "              \"revision\"). Otherwise exit 5, changing nothing, and print\n"
	          "              KEY's current revision on stdout (0 when it has no value;\n"
	          "              --json: {\"error\": \"HL_ECONFLICT\", \"revision\", ...}).\n"
	          "VALUE \"-\" reads the value from stdin, every byte to its end (NUL bytes\n"
	          "included; nothing is added or stripped) and at most the segment's value\n"
	          "limit: a larger one is refused (exit 4) before anything is sent. A value\n"
	          "that is the single character \"-\": printf - | heirloomctl set KEY -.\n"
	          "Use -- before a KEY or VALUE that starts with \"--\".\n" },
	{ .name = "del",
	  .run = ctl_cmd_del,
	  .min_pos = 1,
	  .max_pos = 1,
	  .opts = { { "timeout", 1 }, { "if-rev", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] del KEY [--timeout MS] [--if-rev R]\n"
	          "Delete KEY (its observers get a delete event) and wait until applied.\n"
	          "Exit 1, changing nothing, if KEY has no value. --timeout as for set.\n"
	          "  --if-rev R  compare-and-set: only if KEY is at revision R; prints the\n"
	          "              delete's revision. Otherwise exit 5 and print KEY's current\n"
	          "              revision, as set --if-rev. (With R = 0 and no value: exit 0,\n"
	          "              nothing to do.)\n" },
	{ .name = "watch",
	  .run = ctl_cmd_watch,
	  .min_pos = 0,
	  .max_pos = 1,
	  .opts = { { "count", 1 },
	            { "timeout", 1 },
	            { "filter", 1 },
	            { "no-old", 0 },
	            { "prefix", 1 },
	            { "rev", 1 },
	            { "progress-ms", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] watch KEY [--count N] [--timeout MS]\n"
	          "                  [--filter put|delete] [--no-old] [--rev R] [--progress-ms "
	          "MS]\n"
	          "       heirloomctl [--name NAME] [--json] watch --prefix PREFIX [options]\n"
	          "--rev R: resume: first every change after revision R that the segment's\n"
	          "history holds (in order per key; such events carry no old value), then\n"
	          "the live ones, with no gap or duplicate between. If the history no longer\n"
	          "reaches R: exit 8, and the oldest revision it can resume from is printed\n"
	          "(stdout; --json: the error object's \"oldest_revision\").\n"
	          "--prefix: every key starting with PREFIX, also keys created later; each\n"
	          "line then starts with the event's KEY (escaped), and a lag gives 'lagged'\n"
	          "with no 'resync' (read the keys again: get --prefix).\n"
	          "Observe KEY and print one line per event:\n"
	          "  put REVISION PUBLISHER_PID VALUE\n"
	          "  delete REVISION PUBLISHER_PID\n"
	          "  lagged REVISION 0 DROPPED_EVENTS   (this watcher read too slowly)\n"
	          "  resync REVISION 0 [VALUE]          (the current value after a lag;\n"
	          "                                      none when the key is gone)\n"
	          "  progress REVISION 0                (--progress-ms: every change up to\n"
	          "                                      REVISION has been printed above)\n"
	          "VALUE is escaped as described in 'heirloomctl --help'. --json: one object\n"
	          "per line {\"type\", \"observer\", \"key\", \"revision\", \"publisher\",\n"
	          "\"timestamp_ns\", \"value\", \"old_value\", \"meta\", \"lagged\"}.\n"
	          "  --filter put  only puts (deletes are never sent to this watcher);\n"
	          "  --filter delete  only deletes\n"
	          "  --no-old      leave old values out (--json: \"old_value\": null)\n"
	          "  --progress-ms MS  print a 'progress' line about every MS ms (10 or more)\n"
	          "                while idle: where to resume from (HL_EV_PROGRESS)\n"
	          "  --count N     exit 0 after N events\n"
	          "  --timeout MS  stop after MS ms: exit 0 without --count, exit 4 when\n"
	          "                fewer than N events came (default: no limit)\n"
	          "SIGINT or SIGTERM stop it as --timeout does. When the reader of its output\n"
	          "goes away (watch KEY | head -1), it stops quietly with exit 0.\n" },
	{ .name = "segment",
	  .run = ctl_cmd_segment,
	  .min_pos = 1,
	  .max_pos = 1,
	  .opts = { { "force", 0 }, { "force-live", 0 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] segment inspect\n"
	          "       heirloomctl [--name NAME] [--json] segment remove --force "
	          "[--force-live]\n"
	          "inspect: open the object read-only, validate it and print what validation\n"
	          "  says (ok, not a heirloom segment, another layout version, truncated,\n"
	          "  corrupt) and every header field it could read. Exit 0 if usable, 3 if\n"
	          "  not (or missing).\n"
	          "remove: shm_unlink the object, for a segment left by another layout version\n"
	          "  or by a crash of both daemons. Refused (exit 2) without --force. Refused\n"
	          "  (exit 4) while the segment records a living keeper or worker, unless\n"
	          "  --force-live. Processes that have it mapped keep their mapping.\n" },
	{ .name = "size",
	  .run = ctl_cmd_size,
	  .min_pos = 0,
	  .max_pos = 0,
	  .opts = { { "shards", 1 },
	            { "max-keys", 1 },
	            { "max-observers", 1 },
	            { "max-endpoints", 1 },
	            { "max-value", 1 },
	            { "heap", 1 },
	            { "req-ring", 1 },
	            { "ev-ring", 1 },
	            { "history", 1 } },
	  .help = "Usage: heirloomctl [--json] size [--shards N] [--max-keys N]\n"
	          "       [--max-observers N] [--max-endpoints N] [--max-value SIZE]\n"
	          "       [--heap SIZE] [--req-ring SIZE] [--ev-ring SIZE] [--history SIZE]\n"
	          "Print the size of the segment the keeper or worker would create with these\n"
	          "options (the daemons' own; 0 or absent = their default), what each\n"
	          "capacity adds to it, the space free in /dev/shm and whether it fits. Every\n"
	          "byte is reserved in /dev/shm when the segment is created. Creates nothing.\n"
	          "SIZE takes K, M, G or T (powers of 1024).\n" },
	{ .name = "upgrade",
	  .run = ctl_cmd_upgrade,
	  .min_pos = 0,
	  .max_pos = 0,
	  .opts = { { "worker", 1 }, { "timeout", 1 }, { "socket", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] upgrade [--worker PATH]\n"
	          "       [--timeout MS] [--socket PATH]\n"
	          "Replace the serving worker with a new binary, with no lost or duplicated\n"
	          "event and no error for clients. The keeper (it must supervise the\n"
	          "worker: --spawn-worker) starts PATH (default: its own --spawn-worker path,\n"
	          "e.g. after a package replaced the file), the serving worker finishes its\n"
	          "batch and hands the table over, and the new worker recovers and serves.\n"
	          "If the new worker exits, hangs, or does not ask for the table, hand it\n"
	          "over or finish recovery within --timeout (default 10000 ms) each, it is\n"
	          "killed and the previous binary serves again. A worker built for another\n"
	          "segment layout version is refused before it touches the table (there is\n"
	          "no migration in place). Later restarts run the new binary.\n"
	          "  --socket PATH  the keeper's control socket (default: $HEIRLOOM_SOCKET,\n"
	          "                else the keeper's own rule)\n"
	          "Exit status: 0 upgraded; 4 no keeper or no answer; 6 failed and rolled\n"
	          "back (the previous binary serves); 7 refused, nothing changed.\n" },
	{ .name = "snapshot",
	  .run = ctl_cmd_snapshot,
	  .min_pos = 0,
	  .max_pos = 0,
	  .opts = { { "timeout", 1 }, { "socket", 1 } },
	  .help = "Usage: heirloomctl [--name NAME] [--json] snapshot [--timeout MS]\n"
	          "       [--socket PATH]\n"
	          "Have the keeper write a snapshot of the table (keys, values, revisions)\n"
	          "to its state directory now, and wait until it is on disk (fsync and\n"
	          "rename done). In log mode this compacts the log. The keeper must run\n"
	          "--durability snapshot or log.\n"
	          "  --timeout MS   how long to wait for the answer (default 600000)\n"
	          "  --socket PATH  the keeper's control socket (default: $HEIRLOOM_SOCKET,\n"
	          "                else the keeper's own rule)\n"
	          "Exit status: 0 written; 4 no keeper or no answer; 7 refused or failed\n"
	          "(durability off, a write failed: the message says which).\n" },
};

int
ctl_fail(const struct ctl *c, int code, int err, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fflush(stdout);
	if (c->cmd)
		fprintf(stderr, "heirloomctl: %s: %s\n", c->cmd, msg);
	else
		fprintf(stderr, "heirloomctl: %s\n", msg);
	if (c->json) {
		struct out o;
		out_init(&o, stdout, 1);
		out_obj_begin(&o, NULL);
		out_str(&o, "error",
		        err                 ? hl_err_name(err)
		        : code == CTL_USAGE ? "usage"
		                            : "failed");
		out_i64(&o, "code", err);
		out_str(&o, "message", msg);
		out_i64(&o, "exit_code", code);
		out_finish(&o);
	}
	return code;
}

int
ctl_fail_segment(const struct ctl *c, int err)
{
	switch (err) {
	case -ENOENT:
		return ctl_fail(c, CTL_SEGMENT, err,
		                "no segment '%s' (/dev/shm/heirloom.%s does not exist); is a "
		                "keeper or worker running with --name %s?",
		                c->name, c->name, c->name);
	case -EINVAL:
		return ctl_fail(c, CTL_USAGE, err,
		                "invalid segment name '%s' (1 to 64 printable characters, no '/')",
		                c->name);
	case -ENOSPC:
		return ctl_fail(c, CTL_FAILED, err, "segment '%s': every endpoint is taken",
		                c->name);
	case -ENOMEM: return ctl_fail(c, CTL_FAILED, err, "out of memory");
	case -EACCES: {
		char why[1024];
		view_denied(c->name, why, sizeof(why));
		return ctl_fail(c, CTL_SEGMENT, err, "segment '%s': %s", c->name, why);
	}
	case HL_EUNTRUSTED: {
		char why[512], owner[64];
		if (view_untrusted(c->name, why, sizeof(why), owner, sizeof(owner)) !=
		    HL_EUNTRUSTED)
			snprintf(why, sizeof(why), "%s", hl_strerror(err)), strcpy(owner, "USER");
		return ctl_fail(c, CTL_SEGMENT, err,
		                "refusing segment '%s': %s. If you trust %s, run with "
		                "HEIRLOOM_OWNER=%s; if not, its owner or root can remove it: "
		                "heirloomctl --name %s segment remove --force",
		                c->name, why, owner, owner, c->name);
	}
	case HL_EBADMAGIC:
	case HL_EVERSION:
	case HL_ETRUNCATED:
	case HL_ECORRUPT:
		return ctl_fail(c, CTL_SEGMENT, err,
		                "segment '%s': %s; 'heirloomctl --name %s segment inspect' "
		                "shows more, 'segment remove --force' removes it",
		                c->name, hl_strerror(err), c->name);
	default:
		return ctl_fail(c, CTL_SEGMENT, err, "segment '%s': %s", c->name, hl_strerror(err));
	}
}

int
ctl_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
ctl_check_key(const struct ctl *c, const char *key)
{
	size_t n = strlen(key);
	if (n == 0 || n > HL_KEY_MAX)
		return ctl_fail(c, CTL_USAGE, -EINVAL, "a key is 1 to %u bytes, not %zu",
		                HL_KEY_MAX, n);
	return 0;
}

static const struct cmd *
find_cmd(const char *name)
{
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

/* "--opt" or "--opt=value": 1 when ARG names OPT, with *val set for "=". */
static int
opt_is(const char *arg, const char *opt, const char **val)
{
	size_t n = strlen(opt);
	if (strncmp(arg + 2, opt, n) != 0)
		return 0;
	if (arg[2 + n] == '\0') {
		*val = NULL;
		return 1;
	}
	if (arg[2 + n] == '=') {
		*val = arg + 3 + n;
		return 1;
	}
	return 0;
}

enum { G_NONE, G_HELP, G_VERSION, G_ERROR };

/* A global option at argv[*i]: 1 handled (and *i advanced past a value),
 * 0 not a global option, -1 error (reported). *what gets G_HELP/G_VERSION. */
static int
global_opt(struct ctl *c, int argc, char **argv, int *i, int *what)
{
	const char *a = argv[*i], *val;
	if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
		*what = G_HELP;
		return 1;
	}
	if (strcmp(a, "--version") == 0) {
		*what = G_VERSION;
		return 1;
	}
	if (strcmp(a, "--json") == 0) {
		c->json = 1;
		return 1;
	}
	if (strncmp(a, "--", 2) == 0 && opt_is(a, "name", &val)) {
		if (!val) {
			if (*i + 1 >= argc) {
				ctl_fail(c, CTL_USAGE, 0, "--name needs a value");
				return -1;
			}
			val = argv[++*i];
		}
		c->name = val;
		for (int k = 0; k < c->nnames; k++)
			if (strcmp(c->names[k], val) == 0)
				return 1;
		if (c->nnames == CTL_MAX_NAMES) {
			ctl_fail(c, CTL_USAGE, 0, "at most %d --name", CTL_MAX_NAMES);
			return -1;
		}
		c->names[c->nnames++] = val;
		return 1;
	}
	return 0;
}

/* Parse the command's arguments argv[i..]: positionals, its own options and
 * the global ones. Returns -1 after reporting a usage error. */
static int
parse_cmd(struct ctl *c, const struct cmd *cmd, int argc, char **argv, int i, struct ctl_args *a,
          int *what)
{
	int opts_done = 0;
	memset(a, 0, sizeof(*a));
	for (; i < argc; i++) {
		const char *arg = argv[i];
		if (!opts_done && strcmp(arg, "--") == 0) {
			opts_done = 1;
			continue;
		}
		if (!opts_done && (strncmp(arg, "--", 2) == 0 || strcmp(arg, "-h") == 0)) {
			int g = global_opt(c, argc, argv, &i, what);
			if (g < 0)
				return -1;
			if (g > 0)
				continue;
			int k, found = 0;
			const char *val = NULL;
			for (k = 0; k < CTL_MAX_OPTS && cmd->opts[k].name; k++)
				if (opt_is(arg, cmd->opts[k].name, &val)) {
					found = 1;
					break;
				}
			if (!found)
				return ctl_fail(c, CTL_USAGE, 0, "unknown option %s (see --help)",
				                arg),
				       -1;
			if (cmd->opts[k].has_arg && !val) {
				if (i + 1 >= argc)
					return ctl_fail(c, CTL_USAGE, 0, "%s needs a value", arg),
					       -1;
				val = argv[++i];
			} else if (!cmd->opts[k].has_arg && val) {
				return ctl_fail(c, CTL_USAGE, 0, "--%s takes no value",
				                cmd->opts[k].name),
				       -1;
			}
			a->set[k] = 1;
			a->val[k] = val;
			continue;
		}
		if (a->npos >= cmd->max_pos)
			return ctl_fail(c, CTL_USAGE, 0, "unexpected argument '%s' (see --help)",
			                arg),
			       -1;
		a->pos[a->npos++] = arg;
	}
	if (*what == G_NONE && a->npos < cmd->min_pos)
		return ctl_fail(c, CTL_USAGE, 0, "missing argument (see 'heirloomctl %s --help')",
		                cmd->name),
		       -1;
	return 0;
}

static int
version(void)
{
	printf("heirloomctl %d.%d.%d (segment layout version %u)\n", HL_VERSION_MAJOR,
	       HL_VERSION_MINOR, HL_VERSION_PATCH, HL_LAYOUT_VERSION);
	return fflush(stdout) == 0 ? CTL_OK : CTL_FAILED;
}

int
main(int argc, char **argv)
{
	struct ctl c = { .name = getenv("HEIRLOOM_NAME") };
	if (!c.name || !*c.name)
		c.name = "default";
	/* A $HEIRLOOM_OWNER that names nobody is a mistake in whom to trust:
	 * say so before any command runs (each open resolves it again). */
	struct hl_trust trust;
	char terr[256];
	if (hl__trust_init(&trust, NULL, terr, sizeof(terr)))
		return ctl_fail(&c, CTL_USAGE, -EINVAL, "%s", terr);
	int what = G_NONE, i;
	for (i = 1; i < argc; i++) {
		int g = global_opt(&c, argc, argv, &i, &what);
		if (g < 0)
			return CTL_USAGE;
		if (g == 0)
			break;
	}
	if (i >= argc || what != G_NONE) {
		if (what == G_VERSION)
			return version();
		fputs(top_help, what == G_HELP ? stdout : stderr);
		return what == G_HELP ? CTL_OK : CTL_USAGE;
	}
	if (argv[i][0] == '-')
		return ctl_fail(&c, CTL_USAGE, 0, "unknown option %s (see --help)", argv[i]);
	const struct cmd *cmd = find_cmd(argv[i]);
	if (!cmd)
		return ctl_fail(&c, CTL_USAGE, 0, "unknown command '%s' (see --help)", argv[i]);
	c.cmd = cmd->name;
	struct ctl_args a;
	if (parse_cmd(&c, cmd, argc, argv, i + 1, &a, &what))
		return CTL_USAGE;
	if (what == G_VERSION)
		return version();
	if (what == G_HELP) {
		fputs(cmd->help, stdout);
		return CTL_OK;
	}
	/* One segment per command, but for the Prometheus exposition. */
	if (c.nnames > 1 && !(cmd->run == ctl_cmd_metrics ||
	                      (cmd->run == ctl_cmd_stats && a.set[STATS_PROMETHEUS])))
		return ctl_fail(&c, CTL_USAGE, 0,
		                "--name given %d times; only 'metrics' and 'stats --prometheus' "
		                "read several segments",
		                c.nnames);
	return cmd->run(&c, &a);
}
