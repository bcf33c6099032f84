/* SPDX-License-Identifier: MIT */
/*
 * test_spin.c: the shard thread's idle predictor (daemon/worker/spin.h),
 * driven with numbers: which recent idle gaps make an idle thread spin, and
 * for how long. No clock and no timing: the predictor is a pure function of
 * the gaps it was told about.
 */
#include "harness.h"

#include "spin.h"

#define US 1000u

static void
record_n(struct hl_w_spin *s, unsigned n, uint64_t gap_ns)
{
	for (unsigned i = 0; i < n; i++)
		hl_w_spin_record(s, gap_ns);
}

/* A fresh thread has seen no request: it sleeps at once. */
static void
test_spin_fresh_thread_sleeps_at_once(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 0);
}

/* Requests every 80 us with --spin-us 50 (the paced bench): a spin would
 * never catch one, so none. The fixed spin burned 50 us on each. */
static void
test_spin_gaps_longer_than_the_cap_never_spin(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	record_n(&s, HL_W_SPIN_HIST, 80 * US);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 0);
	/* Just above the cap is still above it. */
	record_n(&s, HL_W_SPIN_HIST, 50 * US + 1);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 0);
}

/* Gaps of 8 us: spin 10 us (the gap and a quarter), not the whole cap. */
static void
test_spin_short_gaps_spin_a_little_longer_than_them(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	record_n(&s, HL_W_SPIN_HIST, 8 * US);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 10 * US);
}

/* Gaps of 45 us: 45 + 11.25 is above the cap of 50: the cap. */
static void
test_spin_budget_never_exceeds_the_cap(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	record_n(&s, HL_W_SPIN_HIST, 45 * US);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 50 * US);
}

/* --spin-us 0: never, whatever the gaps. */
static void
test_spin_cap_zero_never_spins(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	record_n(&s, HL_W_SPIN_HIST, 1 * US);
	assert_int_equal(hl_w_spin_budget(&s, 0), 0);
}

/* QUORUM of the last HIST gaps must be short: one short gap fewer and the
 * thread sleeps; the budget is set by the largest gap of the quorum, so a
 * few long outliers do not stretch it. */
static void
test_spin_needs_a_quorum_of_short_gaps(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	record_n(&s, HL_W_SPIN_HIST - HL_W_SPIN_QUORUM + 1, 1000 * US);
	record_n(&s, HL_W_SPIN_QUORUM - 1, 4 * US);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 0);
	/* The oldest long gap is forgotten: now a quorum. */
	hl_w_spin_record(&s, 2 * US);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 5 * US);
}

/* The rate falls: after HIST long gaps no memory of the fast period is
 * left, and the thread sleeps at once again. */
static void
test_spin_low_rate_forgets_the_fast_period(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	record_n(&s, HL_W_SPIN_HIST, 3 * US);
	assert_true(hl_w_spin_budget(&s, 50 * US) > 0);
	record_n(&s, HL_W_SPIN_HIST - HL_W_SPIN_QUORUM + 1, 10000 * US);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 0);
}

/* A gap beyond 32 bits (seconds asleep) saturates, never wraps to short. */
static void
test_spin_huge_gap_saturates(void **state)
{
	(void)state;
	struct hl_w_spin s;
	hl_w_spin_init(&s);
	record_n(&s, HL_W_SPIN_HIST, (1ull << 32) + 5 * US);
	assert_int_equal(hl_w_spin_budget(&s, 50 * US), 0);
	assert_int_equal(hl_w_spin_budget(&s, 1000000 * US), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spin_fresh_thread_sleeps_at_once),
		cmocka_unit_test(test_spin_gaps_longer_than_the_cap_never_spin),
		cmocka_unit_test(test_spin_short_gaps_spin_a_little_longer_than_them),
		cmocka_unit_test(test_spin_budget_never_exceeds_the_cap),
		cmocka_unit_test(test_spin_cap_zero_never_spins),
		cmocka_unit_test(test_spin_needs_a_quorum_of_short_gaps),
		cmocka_unit_test(test_spin_low_rate_forgets_the_fast_period),
		cmocka_unit_test(test_spin_huge_gap_saturates),
	};
	return cmocka_run_group_tests_name("spin", tests, NULL, NULL);
}
