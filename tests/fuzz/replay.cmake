# SPDX-License-Identifier: MIT
# replay.cmake (included by tests/CMakeLists.txt): each fuzz target built
# with replay.c as its main() and run by CTest over its corpus, seeds and
# kept regression inputs alike, in every build (plain, ASan, TSan).
include(${CMAKE_CURRENT_LIST_DIR}/sources.cmake)
hl_fuzz_core(hl_replay_core)
foreach(t ${HL_FUZZ_TARGETS})
  add_executable(fuzz_replay_${t} ${CMAKE_CURRENT_LIST_DIR}/fuzz_${t}.c
                 ${CMAKE_CURRENT_LIST_DIR}/replay.c)
  target_link_libraries(fuzz_replay_${t} PRIVATE hl_replay_core)
  hl_fuzz_target_links(fuzz_replay_${t} ${t})
  add_test(NAME fuzz_replay_${t}
           COMMAND fuzz_replay_${t} ${CMAKE_CURRENT_LIST_DIR}/corpus/${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 300
    ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1;TSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/tsan.supp halt_on_error=1")
endforeach()
