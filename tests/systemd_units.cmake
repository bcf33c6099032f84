# SPDX-License-Identifier: MIT
# The installed systemd units, checked by systemd itself (issue 18):
#  - they name the configured prefix's binaries (BINDIR);
#  - `systemd-analyze verify` is clean (exit 0, no output) on an instance of
#    each, with ExecStart pointed at this build's binaries (verify wants
#    them to exist);
#  - `systemd-analyze security --offline=true` rates each at most 2.5
#    (--threshold is in tenths);
#  - the sysusers.d file parses (systemd-sysusers --dry-run).
# Skipped only when systemd-analyze is not installed (the message matches
# the test's SKIP_REGULAR_EXPRESSION: Debian 12's CMake 3.25 has no
# cmake_language(EXIT), which came in 3.29).
# Run: cmake -DUNIT_DIR=... -DBUILD_BIN=... -DBINDIR=... -DWORK=... -P this
find_program(SA systemd-analyze)
if(NOT SA)
  message(FATAL_ERROR "systemd-analyze not found: skipped")
endif()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(instances)
foreach(kind keeper worker)
  set(unit ${UNIT_DIR}/heirloom-${kind}@.service)
  file(READ ${unit} text)
  string(FIND "${text}" "ExecStart=${BINDIR}/heirloom-${kind} " at)
  if(at LESS 0)
    message(FATAL_ERROR "${unit}: ExecStart does not name ${BINDIR}/heirloom-${kind}")
  endif()
  execute_process(COMMAND ${SA} security --offline=true --threshold=25 --no-pager ${unit}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  string(REGEX MATCH "Overall exposure level for [^:]*: [0-9.]+" level "${out}")
  message("${level}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${unit}: exposure above 2.5 (rc ${rc}):\n${out}")
  endif()
  string(REPLACE "${BINDIR}/" "${BUILD_BIN}/" text "${text}")
  file(WRITE ${WORK}/heirloom-${kind}@t.service "${text}")
  list(APPEND instances ${WORK}/heirloom-${kind}@t.service)
endforeach()
execute_process(COMMAND ${SA} verify --man=no ${instances}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0 OR NOT out STREQUAL "")
  message(FATAL_ERROR "systemd-analyze verify (rc ${rc}):\n${out}")
endif()
message("systemd-analyze verify: clean")

# The sysusers.d file parses (a dry run: nothing is written).
find_program(SYSUSERS systemd-sysusers)
if(SYSUSERS)
  execute_process(COMMAND ${SYSUSERS} --dry-run ${SYSUSERS_FILE}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0 OR out MATCHES "ignoring|Failed|[Ii]nvalid")
    message(FATAL_ERROR "systemd-sysusers --dry-run ${SYSUSERS_FILE} (rc ${rc}):\n${out}")
  endif()
  message("systemd-sysusers --dry-run: clean")
endif()
