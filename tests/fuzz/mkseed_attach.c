/* SPDX-License-Identifier: MIT */
/*
 * mkseed_attach.c: makes seed inputs for fuzz_attach from real segments, so
 * that the fuzzer starts from tables a worker actually wrote (hashes that
 * match, linked observers, pending dispatches left by a crash) instead of
 * having to invent them. Not a fuzz target; tests/fuzz/mkseeds.sh drives it.
 *
 *   mkseed_attach drive NAME        play a client: observe, publish, delete,
 *                                   unobserve; exits without hl_close()
 *   mkseed_attach dump NAME SEG HDR write the segment's windows (fuzz_seg.h)
 *                                   to SEG and its header to HDR
 */
#include "fuzz_seg.h"
#include "heirloom/heirloom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
drive(const char *name)
{
	struct hl_client *c;
	struct hl_open_opts o = { .timeout_ms = 2000 };
	if (hl_open(name, &o, &c))
		return 1;
	hl_observer_id a = 0, b = 0, x = 0, p = 0;
	/* Errors are expected: a worker run with --crash-at-step dies midway. */
	(void)hl_observe(c, "alpha", 5, 0, &a);
	(void)hl_observe(c, "beta", 4, 0, &b);
	/* A prefix entry (layout 5) beside the keys it matches. */
	(void)hl_observe(c, "g", 1, HL_OBSERVE_PREFIX, &p);
	(void)hl_publish(c, "alpha", 5, "one", 3, "m", 1);
	(void)hl_publish(c, "beta", 4, "two", 3, NULL, 0);
	(void)hl_publish(c, "gamma", 5, "three", 5, "meta", 4);
	(void)hl_delete(c, "gamma", 5);
	(void)hl_publish(c, "alpha", 5, "uno", 3, NULL, 0);
	(void)hl_observe(c, "gamma", 5, 0, &x);
	(void)hl_publish(c, "gamma", 5, "drei", 4, NULL, 0);
	if (b)
		(void)hl_unobserve(c, b);
	(void)hl_publish(c, "beta", 4, "deux", 4, NULL, 0);
	(void)hl_flush(c, 2000);
	_exit(0); /* no hl_close(): the endpoint stays, as after a crash */
}

static int
write_file(const char *path, const void *a, size_t alen, const void *b, size_t blen)
{
	FILE *f = fopen(path, "wbe");
	if (!f || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen)) {
		perror(path);
		if (f)
			fclose(f);
		return 1;
	}
	return fclose(f) != 0;
}

static int
dump(const char *name, const char *seg_path, const char *hdr_path)
{
	int fd;
	struct hl_seg s;
	if (hl__seg_open_fd(name, 0, &fd) || hl__seg_map_ro(fd, &s)) {
		fprintf(stderr, "mkseed_attach: cannot map %s\n", name);
		return 1;
	}
	struct hl_layout_params p = hl_fz_params();
	struct hl_shm_header want;
	if (hl__layout_compute(&p, &want) || want.size != s.h->size ||
	    want.max_keys != s.h->max_keys || want.shards != s.h->shards) {
		fprintf(stderr, "mkseed_attach: %s was not made with fuzz_seg.h's capacities\n",
		        name);
		return 1;
	}
	struct hl_fz_win win[HL_FZ_MAX_WIN];
	size_t nw = hl_fz_windows(s.h, win), total = 1;
	for (size_t i = 0; i < nw; i++)
		total += win[i].len;
	uint8_t *buf = malloc(total);
	if (!buf)
		return 1;
	buf[0] = HL_FZ_MODE_SEGMENT;
	size_t at = 1;
	for (size_t i = 0; i < nw; i++) {
		memcpy(buf + at, s.base + win[i].off, win[i].len);
		at += win[i].len;
	}
	int rc = write_file(seg_path, buf, total, NULL, 0);
	/* Header seed: mode, file size, then the identity and capacity fields
	 * (everything validation reads lies before owner_seq). */
	uint8_t hb[1 + 8];
	hb[0] = HL_FZ_MODE_HEADER;
	memcpy(hb + 1, &s.size, 8);
	rc |= write_file(hdr_path, hb, sizeof(hb), s.base,
	                 offsetof(struct hl_shm_header, owner_seq));
	free(buf);
	hl__seg_unmap(&s);
	close(fd);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "drive"))
		return drive(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "dump"))
		return dump(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: mkseed_attach drive NAME | dump NAME SEG_OUT HDR_OUT\n");
	return 2;
}
