/* SPDX-License-Identifier: MIT */
/*
 * test_alloc.c: the worker's segment-space allocators (lib/alloc.c): the
 * value heap (size classes carved from chunks) and the slot pools. What
 * they promise: exact accounting (used + free == capacity after every
 * call), failures that change nothing, frees that give back exactly what
 * was taken, and a rebuild (reset, mark, finish) that reproduces the state
 * it was given.
 */
#include "harness.h"

#include "alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BASE     (1ull << 20) /* segment offset of the heap: never 0 */
#define CHUNK    4096u        /* classes 0..6: 64 B .. 4 KiB */
#define NCHUNKS  16u
#define BYTES    ((uint64_t)CHUNK * NCHUNKS)
#define NCLASSES 7u
#define POOL_CAP 130u /* crosses two bitmap words */

struct live {
	uint64_t off;
	uint32_t k;
};

struct fx {
	struct hl_heap hp;
	struct hl_pool pool;
	struct live live[NCHUNKS * CHUNK / 64];
	uint32_t nlive;
	uint64_t seed;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || hl__heap_init(&f->hp, BASE, BYTES, CHUNK) || hl__pool_init(&f->pool, POOL_CAP))
		return -1;
	f->seed = 0x9e3779b97f4a7c15ull;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	hl__heap_fini(&f->hp);
	hl__pool_fini(&f->pool);
	free(f);
	return 0;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* The accounting invariant, checked from outside and from inside. */
static void
assert_accounts(struct fx *f)
{
	uint64_t model = 0;
	for (uint32_t i = 0; i < f->nlive; i++)
		model += 64ull << f->live[i].k;
	assert_int_equal(hl__heap_used(&f->hp), model);
	assert_int_equal(hl__heap_used(&f->hp) + hl__heap_free_bytes(&f->hp), BYTES);
	assert_int_equal(hl__heap_check(&f->hp), 0);
}

static int
alloc_live(struct fx *f, uint64_t n)
{
	uint32_t k = 99;
	int err = 0;
	uint64_t off = hl__heap_alloc(&f->hp, n, &k, &err);
	if (!off)
		return err;
	assert_true(off >= BASE && off < BASE + BYTES);
	assert_int_equal((off - BASE) % (64ull << k), 0);
	assert_true((64ull << k) >= n);
	f->live[f->nlive++] = (struct live){ off, k };
	return 0;
}

static void
free_live(struct fx *f, uint32_t i)
{
	assert_int_equal(hl__heap_free(&f->hp, f->live[i].off), 0);
	f->live[i] = f->live[--f->nlive];
}

/* ---- heap ---- */

static void
test_heap_init_rejects_bad_chunk(void **state)
{
	(void)state;
	struct hl_heap hp;
	const uint32_t bad[] = { 0, 32, 100, 3000, 1u << 18 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(hl__heap_init(&hp, BASE, 1u << 20, bad[i]), -EINVAL);
		hl__heap_fini(&hp); /* safe after a failed init */
	}
	assert_int_equal(hl__heap_init(&hp, BASE, CHUNK - 1, CHUNK), -EINVAL);
	hl__heap_fini(&hp);
	assert_int_equal(hl__heap_init(&hp, BASE, 1u << 20, 128u << 10), 0); /* the largest */
	assert_int_equal(hp.nclasses, HL_HEAP_CLASSES);
	hl__heap_fini(&hp);
}

static void
test_heap_class_for_maps_sizes_to_the_smallest_fitting_class(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hl__heap_class_for(&f->hp, 0), 0);
	assert_int_equal(hl__heap_class_for(&f->hp, 64), 0);
	assert_int_equal(hl__heap_class_for(&f->hp, 65), 1);
	assert_int_equal(hl__heap_class_for(&f->hp, 2048), 5);
	assert_int_equal(hl__heap_class_for(&f->hp, CHUNK), NCLASSES - 1);
	assert_int_equal(hl__heap_class_for(&f->hp, CHUNK + 1), -EMSGSIZE);
}

static void
test_heap_alloc_and_free_of_every_class_gives_back_the_space(void **state)
{
	struct fx *f = *state;
	for (uint32_t k = 0; k < NCLASSES; k++) {
		uint64_t sizes[2] = { 64ull << k, k ? (32ull << k) + 1 : 1 };
		for (int j = 0; j < 2; j++) {
			assert_int_equal(alloc_live(f, sizes[j]), 0);
			assert_int_equal(f->live[0].k, k);
			assert_true(hl__heap_is_block(&f->hp, f->live[0].off, k));
			assert_false(k && hl__heap_is_block(&f->hp, f->live[0].off, k - 1));
			assert_accounts(f);
			uint64_t off = f->live[0].off;
			free_live(f, 0);
			assert_false(hl__heap_is_block(&f->hp, off, k));
			assert_accounts(f);
			assert_int_equal(hl__heap_free_bytes(&f->hp), BYTES);
		}
	}
}

static void
test_heap_alloc_too_large_gives_emsgsize_and_changes_nothing(void **state)
{
	struct fx *f = *state;
	assert_int_equal(alloc_live(f, 100), 0);
	uint64_t used = hl__heap_used(&f->hp);
	assert_int_equal(alloc_live(f, CHUNK + 1), -EMSGSIZE);
	assert_int_equal(alloc_live(f, UINT64_MAX), -EMSGSIZE);
	assert_int_equal(hl__heap_used(&f->hp), used);
	assert_accounts(f);
}

static void
test_heap_exhaustion_gives_enospc_and_changes_nothing(void **state)
{
	struct fx *f = *state;
	for (uint32_t i = 0; i < NCHUNKS - 1; i++)
		assert_int_equal(alloc_live(f, CHUNK), 0);
	/* The last chunk goes to class 0 and is filled block by block. */
	for (uint32_t i = 0; i < CHUNK / 64; i++)
		assert_int_equal(alloc_live(f, 1), 0);
	assert_int_equal(hl__heap_used(&f->hp), BYTES);
	assert_int_equal(hl__heap_free_bytes(&f->hp), 0);
	for (uint32_t k = 0; k < NCLASSES; k++)
		assert_int_equal(alloc_live(f, 64ull << k), -ENOSPC);
	assert_int_equal(hl__heap_used(&f->hp), BYTES);
	assert_accounts(f);
	/* One block back: exactly that class can allocate again, once. */
	uint64_t off = f->live[f->nlive - 1].off;
	free_live(f, f->nlive - 1);
	assert_int_equal(alloc_live(f, 128), -ENOSPC);
	assert_int_equal(alloc_live(f, 64), 0);
	assert_int_equal(f->live[f->nlive - 1].off, off);
	assert_int_equal(alloc_live(f, 64), -ENOSPC);
	assert_accounts(f);
}

static void
test_heap_free_returns_space_exactly(void **state)
{
	struct fx *f = *state;
	const uint64_t free0 = hl__heap_free_bytes(&f->hp);
	for (int round = 0; round < 20; round++) {
		while (alloc_live(f, 1 + rnd(&f->seed) % CHUNK) == 0)
			;
		while (f->nlive) {
			free_live(f, (uint32_t)(rnd(&f->seed) % f->nlive));
			assert_accounts(f);
		}
		assert_int_equal(hl__heap_used(&f->hp), 0);
		assert_int_equal(hl__heap_free_bytes(&f->hp), free0);
	}
	/* Every chunk is whole again. */
	for (uint32_t i = 0; i < NCHUNKS; i++)
		assert_int_equal(alloc_live(f, CHUNK), 0);
}

static void
test_heap_used_plus_free_equals_capacity_after_every_operation(void **state)
{
	struct fx *f = *state;
	uint32_t fails = 0;
	for (int op = 0; op < 20000; op++) {
		uint64_t r = rnd(&f->seed);
		/* Phases that fill (30% frees) and drain (70% frees) the heap. */
		int filling = (op / 2000) % 2 == 0;
		if (f->nlive && (r % 10) < (filling ? 3u : 7u)) {
			free_live(f, (uint32_t)((r >> 8) % f->nlive));
		} else {
			/* Mostly small values, sometimes large ones. */
			uint64_t n = (r & 6) ? 1 + (r >> 16) % 512 : 1 + (r >> 16) % CHUNK;
			uint64_t used = hl__heap_used(&f->hp);
			int rc = alloc_live(f, n);
			if (rc) {
				assert_int_equal(rc, -ENOSPC);
				assert_int_equal(hl__heap_used(&f->hp), used);
				fails++;
			}
		}
		assert_accounts(f);
	}
	assert_true(fails > 0); /* the sequence reached exhaustion */
}

static void
test_heap_double_free_and_bad_offsets_give_einval(void **state)
{
	struct fx *f = *state;
	assert_int_equal(alloc_live(f, 128), 0); /* class 1, chunk 0, block 0 */
	assert_int_equal(alloc_live(f, 128), 0); /* block 1 */
	uint64_t a = f->live[0].off, b = f->live[1].off;
	assert_int_equal(a, BASE);
	assert_int_equal(hl__heap_free(&f->hp, b), 0);
	f->nlive = 1;
	const uint64_t bad[] = {
		0,
		BASE - 64,
		BASE + BYTES,
		UINT64_MAX,
		b,            /* already freed */
		a + 64,       /* inside a block of 128 */
		a + 1,        /* misaligned */
		BASE + CHUNK, /* a chunk no class holds */
		a + 2 * 128,  /* a block never allocated */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(hl__heap_free(&f->hp, bad[i]), -EINVAL);
		assert_accounts(f);
	}
	assert_int_equal(hl__heap_free(&f->hp, a), 0);
	assert_int_equal(hl__heap_free(&f->hp, a), -EINVAL);
	f->nlive = 0;
	assert_accounts(f);
}

static void
test_heap_chunk_returns_to_free_pool_when_its_last_block_is_freed(void **state)
{
	struct fx *f = *state;
	assert_int_equal(alloc_live(f, 64), 0); /* chunk 0 becomes class 0 */
	for (uint32_t i = 1; i < NCHUNKS; i++)
		assert_int_equal(alloc_live(f, CHUNK), 0);
	assert_int_equal(alloc_live(f, CHUNK), -ENOSPC);
	assert_int_equal(alloc_live(f, 2048), -ENOSPC);
	free_live(f, 0);
	/* The whole chunk is free again: another class can take it. */
	assert_int_equal(hl__heap_free_bytes(&f->hp), CHUNK);
	assert_int_equal(alloc_live(f, 2048), 0);
	assert_int_equal(f->live[f->nlive - 1].off, BASE);
	assert_int_equal(alloc_live(f, 2048), 0);
	assert_int_equal(alloc_live(f, 64), -ENOSPC);
	assert_accounts(f);
}

static void
test_heap_rebuild_by_reset_mark_finish_restores_used_and_free(void **state)
{
	struct fx *f = *state;
	for (int i = 0; i < 300; i++)
		if (alloc_live(f, 1 + rnd(&f->seed) % 1500))
			break;
	for (int i = 0; i < 100 && f->nlive; i++)
		free_live(f, (uint32_t)(rnd(&f->seed) % f->nlive));
	assert_accounts(f);
	const uint64_t used = hl__heap_used(&f->hp), free_b = hl__heap_free_bytes(&f->hp);

	hl__heap_reset(&f->hp);
	assert_int_equal(hl__heap_used(&f->hp), 0);
	for (uint32_t i = 0; i < f->nlive; i++)
		assert_int_equal(hl__heap_mark(&f->hp, f->live[i].off, f->live[i].k), 0);
	hl__heap_finish(&f->hp);

	assert_int_equal(hl__heap_used(&f->hp), used);
	assert_int_equal(hl__heap_free_bytes(&f->hp), free_b);
	assert_accounts(f);
	for (uint32_t i = 0; i < f->nlive; i++)
		assert_true(hl__heap_is_block(&f->hp, f->live[i].off, f->live[i].k));
	/* The rebuilt state allocates and frees like the original. */
	while (alloc_live(f, 1 + rnd(&f->seed) % CHUNK) == 0)
		assert_accounts(f);
	while (f->nlive)
		free_live(f, f->nlive - 1);
	assert_int_equal(hl__heap_free_bytes(&f->hp), BYTES);
	assert_accounts(f);
}

static void
test_heap_mark_of_an_overlapping_class_gives_eproto(void **state)
{
	struct fx *f = *state;
	hl__heap_reset(&f->hp);
	assert_int_equal(hl__heap_mark(&f->hp, BASE, 0), 0);
	assert_int_equal(hl__heap_mark(&f->hp, BASE + 128, 1), -EPROTO);
	assert_int_equal(hl__heap_mark(&f->hp, BASE, NCLASSES - 1), -EPROTO);
	assert_int_equal(hl__heap_used(&f->hp), 64);
	hl__heap_finish(&f->hp);
	f->live[f->nlive++] = (struct live){ BASE, 0 };
	assert_accounts(f);
}

static void
test_heap_mark_twice_gives_eexist_and_bad_marks_give_einval(void **state)
{
	struct fx *f = *state;
	hl__heap_reset(&f->hp);
	assert_int_equal(hl__heap_mark(&f->hp, BASE + 256, 2), 0);
	assert_int_equal(hl__heap_mark(&f->hp, BASE + 256, 2), -EEXIST);
	assert_int_equal(hl__heap_mark(&f->hp, BASE + 64, 2), -EINVAL); /* misaligned */
	assert_int_equal(hl__heap_mark(&f->hp, BASE + BYTES, 0), -EINVAL);
	assert_int_equal(hl__heap_mark(&f->hp, BASE - 64, 0), -EINVAL);
	assert_int_equal(hl__heap_mark(&f->hp, BASE, NCLASSES), -EINVAL); /* no such class */
	assert_int_equal(hl__heap_used(&f->hp), 256);
	hl__heap_finish(&f->hp);
	f->live[f->nlive++] = (struct live){ BASE + 256, 2 };
	assert_accounts(f);
	assert_int_equal(hl__heap_free(&f->hp, BASE + 256), 0);
}

static void
test_heap_check_finds_nothing_on_valid_state(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hl__heap_check(&f->hp), 0);
	for (uint32_t k = 0; k < NCLASSES; k++)
		assert_int_equal(alloc_live(f, 64ull << k), 0);
	assert_int_equal(hl__heap_check(&f->hp), 0);
	while (f->nlive)
		free_live(f, 0);
	assert_int_equal(hl__heap_check(&f->hp), 0);
}

/* ---- pool ---- */

static void
test_pool_allocates_every_slot_once_then_returns_zero(void **state)
{
	struct fx *f = *state;
	for (uint32_t i = 1; i <= POOL_CAP; i++) {
		assert_int_equal(hl__pool_alloc(&f->pool), i); /* ascending by design */
		assert_true(hl__pool_is_used(&f->pool, i));
	}
	assert_int_equal(hl__pool_used(&f->pool), POOL_CAP);
	assert_int_equal(hl__pool_alloc(&f->pool), 0);
	assert_int_equal(hl__pool_used(&f->pool), POOL_CAP);
}

static void
test_pool_free_makes_the_slot_available_again(void **state)
{
	struct fx *f = *state;
	while (hl__pool_alloc(&f->pool))
		;
	const uint32_t back[] = { 64, 1, POOL_CAP, 128 };
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(hl__pool_free(&f->pool, back[i]), 0);
		assert_false(hl__pool_is_used(&f->pool, back[i]));
		assert_int_equal(hl__pool_used(&f->pool), POOL_CAP - 1);
		assert_int_equal(hl__pool_alloc(&f->pool), back[i]);
		assert_int_equal(hl__pool_alloc(&f->pool), 0);
	}
}

static void
test_pool_double_free_and_out_of_range_give_einval(void **state)
{
	struct fx *f = *state;
	uint32_t a = hl__pool_alloc(&f->pool);
	assert_int_equal(hl__pool_free(&f->pool, 0), -EINVAL);
	assert_int_equal(hl__pool_free(&f->pool, POOL_CAP + 1), -EINVAL);
	assert_int_equal(hl__pool_free(&f->pool, UINT32_MAX), -EINVAL);
	assert_int_equal(hl__pool_free(&f->pool, a + 1), -EINVAL); /* never allocated */
	assert_int_equal(hl__pool_used(&f->pool), 1);
	assert_int_equal(hl__pool_free(&f->pool, a), 0);
	assert_int_equal(hl__pool_free(&f->pool, a), -EINVAL);
	assert_int_equal(hl__pool_used(&f->pool), 0);
	assert_false(hl__pool_is_used(&f->pool, 0));
	assert_false(hl__pool_is_used(&f->pool, POOL_CAP + 1));
}

static void
test_pool_rebuild_by_reset_mark_finish_keeps_exactly_the_marked_slots(void **state)
{
	struct fx *f = *state;
	uint8_t in_use[POOL_CAP + 1] = { 0 };
	for (uint32_t i = 0; i < 100; i++)
		in_use[hl__pool_alloc(&f->pool)] = 1;
	for (uint32_t i = 0; i < 60; i++) {
		uint32_t idx = 1 + (uint32_t)(rnd(&f->seed) % 100);
		if (in_use[idx]) {
			assert_int_equal(hl__pool_free(&f->pool, idx), 0);
			in_use[idx] = 0;
		}
	}
	const uint32_t used = hl__pool_used(&f->pool);

	hl__pool_reset(&f->pool);
	for (uint32_t i = 1; i <= POOL_CAP; i++)
		if (in_use[i])
			assert_int_equal(hl__pool_mark(&f->pool, i), 0);
	for (uint32_t i = 1; i <= POOL_CAP; i++)
		if (in_use[i])
			assert_int_equal(hl__pool_mark(&f->pool, i), -EEXIST);
	assert_int_equal(hl__pool_mark(&f->pool, 0), -EINVAL);
	assert_int_equal(hl__pool_mark(&f->pool, POOL_CAP + 1), -EINVAL);
	hl__pool_finish(&f->pool);

	assert_int_equal(hl__pool_used(&f->pool), used);
	for (uint32_t i = 1; i <= POOL_CAP; i++)
		assert_int_equal(hl__pool_is_used(&f->pool, i), in_use[i]);
	/* Exactly the unmarked slots come out, lowest first. */
	uint32_t prev = 0, got = 0, idx;
	while ((idx = hl__pool_alloc(&f->pool)) != 0) {
		assert_false(in_use[idx]);
		assert_true(idx > prev);
		prev = idx;
		got++;
	}
	assert_int_equal(got, POOL_CAP - used);
}

/* hl__pool_rebuild() (recovery's bulk form) leaves the pool as reset + mark
 * + finish would: exactly the reached slots used, the others handed out
 * lowest first, whatever state the pool was in before. */
static void
test_pool_bulk_rebuild_keeps_exactly_the_reached_slots(void **state)
{
	struct fx *f = *state;
	uint32_t reached[POOL_CAP] = { 0 }, used = 0;
	for (uint32_t i = 0; i < 100; i++)
		(void)hl__pool_alloc(&f->pool); /* state to be thrown away */
	for (uint32_t i = 1; i <= POOL_CAP; i++)
		if (rnd(&f->seed) % 3 == 0) {
			reached[i - 1] = 1 + (uint32_t)(rnd(&f->seed) % 7); /* endpoint + 1 */
			used++;
		}
	hl__pool_rebuild(&f->pool, reached);
	assert_int_equal(hl__pool_used(&f->pool), used);
	for (uint32_t i = 1; i <= POOL_CAP; i++)
		assert_int_equal(hl__pool_is_used(&f->pool, i), reached[i - 1] != 0);
	uint32_t prev = 0, got = 0, idx;
	while ((idx = hl__pool_alloc(&f->pool)) != 0) {
		assert_int_equal(reached[idx - 1], 0);
		assert_true(idx > prev);
		prev = idx;
		got++;
	}
	assert_int_equal(got, POOL_CAP - used);
	/* A reached slot frees like any allocated one. */
	for (uint32_t i = 1; i <= POOL_CAP; i++)
		if (reached[i - 1]) {
			assert_int_equal(hl__pool_free(&f->pool, i), 0);
			break;
		}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_heap_init_rejects_bad_chunk),
		T(test_heap_class_for_maps_sizes_to_the_smallest_fitting_class),
		T(test_heap_alloc_and_free_of_every_class_gives_back_the_space),
		T(test_heap_alloc_too_large_gives_emsgsize_and_changes_nothing),
		T(test_heap_exhaustion_gives_enospc_and_changes_nothing),
		T(test_heap_free_returns_space_exactly),
		T(test_heap_used_plus_free_equals_capacity_after_every_operation),
		T(test_heap_double_free_and_bad_offsets_give_einval),
		T(test_heap_chunk_returns_to_free_pool_when_its_last_block_is_freed),
		T(test_heap_rebuild_by_reset_mark_finish_restores_used_and_free),
		T(test_heap_mark_of_an_overlapping_class_gives_eproto),
		T(test_heap_mark_twice_gives_eexist_and_bad_marks_give_einval),
		T(test_heap_check_finds_nothing_on_valid_state),
		T(test_pool_allocates_every_slot_once_then_returns_zero),
		T(test_pool_free_makes_the_slot_available_again),
		T(test_pool_double_free_and_out_of_range_give_einval),
		T(test_pool_rebuild_by_reset_mark_finish_keeps_exactly_the_marked_slots),
		T(test_pool_bulk_rebuild_keeps_exactly_the_reached_slots),
#undef T
	};
	return cmocka_run_group_tests_name("alloc", tests, NULL, NULL);
}
