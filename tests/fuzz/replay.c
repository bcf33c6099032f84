/* SPDX-License-Identifier: MIT */
/*
 * replay.c: a main() for the fuzz targets outside libFuzzer. It feeds every
 * file named on the command line (or found in a directory named there) to
 * LLVMFuzzerTestOneInput() once, so that CTest runs each target's seed
 * corpus and kept regression inputs with any compiler and sanitizer (the
 * libssh/OSS-Fuzz "replay" model). Exit status 0 when every input ran;
 * a finding aborts, as under libFuzzer.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int
run_file(const char *path)
{
	FILE *f = fopen(path, "rbe");
	if (!f) {
		perror(path);
		return -1;
	}
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			uint8_t *n = realloc(buf, cap);
			if (!n) {
				fclose(f);
				free(buf);
				return -1;
			}
			buf = n;
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

static int
run_path(const char *path, unsigned *n)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*n)++;
		return run_file(path);
	}
	struct dirent **ents;
	int k = scandir(path, &ents, NULL, alphasort);
	if (k < 0) {
		perror(path);
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < k; i++) {
		char p[4096];
		if (ents[i]->d_name[0] != '.' &&
		    snprintf(p, sizeof(p), "%s/%s", path, ents[i]->d_name) < (int)sizeof(p) &&
		    run_path(p, n) < 0)
			rc = -1;
		free(ents[i]);
	}
	free(ents);
	return rc;
}

int
main(int argc, char **argv)
{
	unsigned n = 0;
	int rc = 0;
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		if (run_path(argv[i], &n) < 0)
			rc = 1;
	printf("%s: %u inputs replayed\n", argv[0], n);
	return rc == 0 && n > 0 ? 0 : 1;
}
