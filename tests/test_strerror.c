/* SPDX-License-Identifier: MIT */
/*
 * test_strerror.c: hl_strerror() and hl_err_name() (lib/strerror.c): every
 * HL_E* code has its own name and description, negative errno values go
 * through glibc's strerrordesc_np()/strerrorname_np(), anything else is
 * "unknown error"/"EUNKNOWN", and neither function ever returns NULL.
 */
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	int code;
	const char *name;
} own[] = {
	{ HL_EBADMAGIC, "HL_EBADMAGIC" },   { HL_EVERSION, "HL_EVERSION" },
	{ HL_ECORRUPT, "HL_ECORRUPT" },     { HL_ENOWORKER, "HL_ENOWORKER" },
	{ HL_ESTALE, "HL_ESTALE" },         { HL_ETRUNCATED, "HL_ETRUNCATED" },
	{ HL_EUNTRUSTED, "HL_EUNTRUSTED" }, { HL_ECONFLICT, "HL_ECONFLICT" },
	{ HL_ECOMPACTED, "HL_ECOMPACTED" }, { HL_ENOTDURABLE, "HL_ENOTDURABLE" },
};
#define NOWN (sizeof(own) / sizeof(own[0]))

/* Nothing to set up: the fixture only proves each test starts clean. */
static int
setup(void **state)
{
	*state = NULL;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	return 0;
}

static void
test_every_own_code_has_its_own_name_and_description(void **state)
{
	(void)state;
	for (size_t i = 0; i < NOWN; i++) {
		const char *n = hl_err_name(own[i].code), *d = hl_strerror(own[i].code);
		assert_non_null(n);
		assert_non_null(d);
		assert_string_equal(n, own[i].name);
		assert_true(strlen(d) > 10);
		assert_string_not_equal(d, "unknown error");
		for (size_t j = 0; j < i; j++) {
			assert_string_not_equal(hl_strerror(own[j].code), d);
			assert_string_not_equal(hl_err_name(own[j].code), n);
		}
	}
}

/* Our codes sit out of errno's reach, so no errno can shadow them. */
static void
test_own_codes_lie_below_the_errno_range(void **state)
{
	(void)state;
	for (size_t i = 0; i < NOWN; i++)
		assert_true(own[i].code < -4095);
}

static void
test_errno_values_map_through_glibc(void **state)
{
	(void)state;
	const int errs[] = { EINVAL, ENOENT, EMSGSIZE, ENOSPC, ETIMEDOUT, EAGAIN, EPROTO,
		             EEXIST, EBUSY,  EACCES,   EPERM,  ENOMEM,    EINTR };
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		assert_string_equal(hl_err_name(-errs[i]), strerrorname_np(errs[i]));
		assert_string_equal(hl_strerror(-errs[i]), strerrordesc_np(errs[i]));
	}
	assert_string_equal(hl_err_name(-ENOSPC), "ENOSPC");
	assert_string_equal(hl_err_name(-EMSGSIZE), "EMSGSIZE");
	assert_string_equal(hl_strerror(-ENOENT), "No such file or directory");
}

static void
test_zero_is_success(void **state)
{
	(void)state;
	assert_string_equal(hl_err_name(0), "OK");
	assert_string_equal(hl_strerror(0), "success");
}

static void
test_unknown_codes_give_unknown_error_and_eunknown(void **state)
{
	(void)state;
	const int unknown[] = { -4095,   -4000,       -20000, -20011, -30000,
		                INT_MIN, INT_MIN + 1, 1,      EINVAL, INT_MAX };
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		assert_string_equal(hl_strerror(unknown[i]), "unknown error");
		assert_string_equal(hl_err_name(unknown[i]), "EUNKNOWN");
	}
}

static void
test_never_returns_null_for_any_code(void **state)
{
	(void)state;
	for (int e = -25000; e <= 5000; e++) {
		const char *d = hl_strerror(e), *n = hl_err_name(e);
		if (!d || !n || !*d || !*n)
			fail_msg("code %d: strerror %p, name %p", e, (const void *)d,
			         (const void *)n);
	}
	const int edges[] = { INT_MIN, INT_MIN + 1, INT_MAX, -4096, -4095 };
	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		assert_non_null(hl_strerror(edges[i]));
		assert_non_null(hl_err_name(edges[i]));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_every_own_code_has_its_own_name_and_description),
		T(test_own_codes_lie_below_the_errno_range),
		T(test_errno_values_map_through_glibc),
		T(test_zero_is_success),
		T(test_unknown_codes_give_unknown_error_and_eunknown),
		T(test_never_returns_null_for_any_code),
#undef T
	};
	return cmocka_run_group_tests_name("strerror", tests, NULL, NULL);
}
