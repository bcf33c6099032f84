# SPDX-License-Identifier: MIT
# sources.cmake: one static library with everything the fuzz targets run:
# libheirloom, the daemons' common code and the worker without its main().
# Compiled from the sources (not heirloom_static) so that the libFuzzer
# build can instrument it with its own flags. Used by CMakeLists.txt here
# (HL_FUZZ, libFuzzer) and by replay.cmake (the CTest replays).
function(hl_fuzz_core name)
  file(GLOB lib_src CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/lib/*.c)
  file(GLOB common_src CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/daemon/common/*.c)
  file(GLOB worker_src CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/daemon/worker/*.c)
  list(REMOVE_ITEM worker_src ${PROJECT_SOURCE_DIR}/daemon/worker/main.c)
  add_library(${name} STATIC ${lib_src} ${common_src} ${worker_src})
  target_include_directories(${name} PUBLIC
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/lib
    ${PROJECT_SOURCE_DIR}/daemon/worker ${PROJECT_SOURCE_DIR}/daemon/common
    ${CMAKE_CURRENT_FUNCTION_LIST_DIR})
  # libc malloc: jemalloc would replace ASan's.
  target_compile_definitions(${name} PUBLIC HL_HAVE_JEMALLOC=0)
  target_compile_options(${name} PRIVATE ${ARGN})
  target_link_libraries(${name} PUBLIC PkgConfig::URCU PkgConfig::INIH PkgConfig::ISAL Threads::Threads rt)
endfunction()

# The targets, each fuzz_<t>.c; attach mutes the worker's stderr log.
set(HL_FUZZ_TARGETS request attach config events)
function(hl_fuzz_target_links target t)
  if(t STREQUAL "attach")
    target_link_options(${target} PRIVATE -Wl,--wrap=hl__logl)
  endif()
endfunction()
