/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config.c: the daemons' option resolver (daemon/common/config.c) on
 * an arbitrary config file and command line.
 *
 * The file is the part an operator (or whoever can write /etc/heirloom)
 * controls, and it goes through Debian's inih plus our handler: line
 * counting, sections, precedence, every value type. The target loads it
 * through a memfd named by /proc/self/fd/N with an option table that has
 * one option of each type, bounds, a short name, an implicit value, a list
 * of choices, a sibling section and a sibling's option names (skipped in
 * the shared sections), then exercises the dump, source and free paths.
 *
 * Input: if the first byte is below 8 it is a count K of command-line words
 * that follow, each NUL-terminated; the rest of the input is the file.
 * Words that would name another config file are dropped (the target must
 * not read arbitrary paths such as /dev/zero). Oracles: ASan (including
 * leaks: every successful load is freed), UBSan, and the documented
 * contract "on failure no dst was written".
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x))                                                                          \
			abort();                                                                   \
	} while (0)

#define SENTINEL (-7)

static int memfd = -1;
static char path[64];
static FILE *devnull;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	static const char *const vars[] = {
		"HEIRLOOM_NAME",       "HEIRLOOM_CONFIG",       "HEIRLOOM_SHARDS",
		"HEIRLOOM_FOREGROUND", "HEIRLOOM_SOCKET",       "HEIRLOOM_TIMEOUT",
		"HEIRLOOM_MODE",       "HEIRLOOM_SEGMENT_SIZE", "HEIRLOOM_SPAWN_WORKER",
		"HEIRLOOM_LABEL",
	};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	devnull = fopen("/dev/null", "we");
	CHECK(devnull);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (memfd < 0)
		LLVMFuzzerInitialize(NULL, NULL);

	/* Command line: prog --config PATH, then the fuzzed words. */
	char *argv[16];
	char *words = NULL;
	int argc = 0;
	argv[argc++] = "heirloom-keeper";
	argv[argc++] = "--config";
	argv[argc++] = path;
	if (size > 0 && data[0] < 8) {
		unsigned k = data[0];
		size_t at = 1;
		words = malloc(size); /* every word is a NUL-terminated copy */
		CHECK(words);
		size_t wpos = 0;
		for (unsigned i = 0; i < k && at < size; i++) {
			const uint8_t *nul = memchr(data + at, 0, size - at);
			size_t len = nul ? (size_t)(nul - (data + at)) : size - at;
			char *w = words + wpos;
			memcpy(w, data + at, len);
			w[len] = '\0';
			wpos += len + 1;
			at += len + (nul ? 1 : 0);
			if (!strstr(w, "config") && argc < 15)
				argv[argc++] = w;
		}
		data += at;
		size -= at;
	}
	argv[argc] = NULL;

	/* The file. */
	CHECK(ftruncate(memfd, 0) == 0);
	CHECK(pwrite(memfd, data, size, 0) == (ssize_t)size);

	int64_t shards = SENTINEL, timeout = SENTINEL, segsize = SENTINEL;
	bool fg = false;
	unsigned mode = 0;
	char *socket = NULL, *spawn = NULL, *label = NULL, *level = NULL;
	static const char *const levels[] = { "err", "warning", "info", "debug", NULL };
	struct hl_cfg_opt opts[] = {
		{ .name = "shards",
		  .short_name = 's',
		  .type = HL_CFG_INT,
		  .def = "16",
		  .min = 1,
		  .max = 1024,
		  .help = "shards",
		  .dst = &shards },
		{ .name = "foreground",
		  .short_name = 'f',
		  .type = HL_CFG_BOOL,
		  .def = "false",
		  .help = "fg",
		  .dst = &fg },
		{ .name = "socket", .type = HL_CFG_STR, .help = "socket", .dst = &socket },
		{ .name = "timeout",
		  .type = HL_CFG_MS,
		  .def = "30s",
		  .min = 1,
		  .max = 3600000,
		  .help = "timeout",
		  .dst = &timeout },
		{ .name = "mode",
		  .type = HL_CFG_MODE,
		  .def = "0660",
		  .help = "mode",
		  .dst = &mode },
		{ .name = "segment-size",
		  .type = HL_CFG_SIZE,
		  .def = "64M",
		  .help = "size",
		  .dst = &segsize },
		{ .name = "spawn-worker",
		  .type = HL_CFG_STR,
		  .implicit = "/usr/bin/w",
		  .help = "spawn",
		  .dst = &spawn },
		{ .name = "label",
		  .short_name = 'l',
		  .type = HL_CFG_STR,
		  .def = "x",
		  .help = "label",
		  .dst = &label },
		{ .name = "level",
		  .type = HL_CFG_STR,
		  .def = "info",
		  .choices = levels,
		  .help = "level",
		  .dst = &level },
	};
	static const char *const foreign[] = { "worker", NULL };
	/* Ours plus two a sibling daemon has: skipped in the shared sections. */
	static const char *const shared[] = { "shards", "foreground",   "socket",         "timeout",
		                              "mode",   "segment-size", "spawn-worker",   "label",
		                              "level",  "stop-timeout", "slow-reader-ms", NULL };
	struct hl_cfg cfg = { .prog = "heirloom-keeper",
		              .version = "0",
		              .section = "keeper",
		              .foreign = foreign,
		              .shared_names = shared,
		              .config_dir = "/nonexistent-heirloom-fuzz",
		              .out = devnull,
		              .opts = opts,
		              .nopts = sizeof(opts) / sizeof(opts[0]) };
	char err[256];
	int rc = hl__cfg_load(&cfg, argc, argv, err, sizeof(err));
	if (rc == 0) {
		CHECK(cfg.argind >= 0 && cfg.argind <= argc);
		hl__cfg_dump(&cfg, devnull);
		for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
			unsigned line = 0;
			(void)hl__cfg_source(&cfg, opts[i].name, &line);
		}
		if (cfg.request == HL_CFG_RUN) {
			/* Every bounded value is inside its bounds. */
			CHECK(shards >= 1 && shards <= 1024);
			CHECK(timeout >= 1 && timeout <= 3600000);
			CHECK(mode <= 07777);
			CHECK(label != NULL);
			/* A value with choices is one of them. */
			int known = 0;
			for (const char *const *l = levels; *l; l++)
				known |= level && !strcmp(level, *l);
			CHECK(known);
		}
		hl__cfg_free(&cfg);
		CHECK(socket == NULL && spawn == NULL && label == NULL && level == NULL);
	} else {
		/* A failed load writes nothing and leaves nothing to free. */
		CHECK(rc < 0 && memchr(err, '\0', sizeof(err)));
		CHECK(shards == SENTINEL && timeout == SENTINEL && segsize == SENTINEL);
		CHECK(!fg && mode == 0 && !socket && !spawn && !label && !level);
		CHECK(cfg.slots == NULL);
	}
	free(words);
	return 0;
}
