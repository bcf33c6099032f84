# SPDX-License-Identifier: MIT
# Warnings, probed one by one so that an older compiler degrades quietly
# (the libssh CompilerChecks.cmake model), and the sanitizer switches.
include(CheckCCompilerFlag)

set(HL_WARNING_FLAGS "")
foreach(flag -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
             -Wpointer-arith -Wformat=2 -Wundef -Wvla -Wcast-align
             -Wno-missing-field-initializers)
  string(MAKE_C_IDENTIFIER "HAVE${flag}" var)
  check_c_compiler_flag(${flag} ${var})
  if(${var})
    list(APPEND HL_WARNING_FLAGS ${flag})
  endif()
endforeach()
if(HL_WERROR)
  list(APPEND HL_WARNING_FLAGS -Werror)
endif()
add_compile_options(${HL_WARNING_FLAGS})
add_compile_definitions(_GNU_SOURCE)

if(HL_TSAN AND (HL_ASAN OR HL_UBSAN))
  message(FATAL_ERROR "HL_TSAN cannot be combined with HL_ASAN/HL_UBSAN")
endif()
set(HL_SANITIZE "")
if(HL_ASAN)
  set(HL_SANITIZE "address,undefined")
elseif(HL_UBSAN)
  set(HL_SANITIZE "undefined")
elseif(HL_TSAN)
  set(HL_SANITIZE "thread")
endif()
if(HL_SANITIZE)
  add_compile_options(-fsanitize=${HL_SANITIZE} -fno-omit-frame-pointer -g)
  if(HL_ASAN OR HL_UBSAN)
    add_compile_options(-fno-sanitize-recover=undefined)
  endif()
  add_link_options(-fsanitize=${HL_SANITIZE})
endif()
# GCC 12 warns (-Wtsan) that TSan does not instrument atomic_thread_fence()
# (lib/seqlock.h, the doorbell's Dekker fence). That is a limit of the tool,
# not a defect of the code, and must not break HL_WERROR builds.
if(HL_TSAN)
  check_c_compiler_flag(-Wno-tsan HAVE_WNO_TSAN)
  if(HAVE_WNO_TSAN)
    add_compile_options(-Wno-tsan)
  endif()
endif()
