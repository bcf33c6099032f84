# SPDX-License-Identifier: MIT
# Every dependency comes from Debian's packages through pkg-config. A missing
# one stops configure with the name of the package that provides it.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config")
endif()

function(hl_require prefix module debpkg)
  pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${prefix}_FOUND)
    message(FATAL_ERROR "${module} not found: apt-get install ${debpkg}")
  endif()
  message(STATUS "${module} ${${prefix}_VERSION} (Debian package ${debpkg})")
endfunction()

hl_require(URCU liburcu-memb liburcu-dev)
hl_require(JEMALLOC jemalloc libjemalloc-dev)
hl_require(INIH inih libinih-dev)
# sd_notify(3) for the daemons: readiness, watchdog, stopping.
hl_require(SYSTEMD libsystemd libsystemd-dev)
# CRC-32C (crc32_iscsi) of the state files (--durability): isa-l, Intel's
# storage library, as Debian packages it.
hl_require(ISAL libisal libisal-dev)
# heirloomctl: JSON output (json-c) and the Prometheus scrape target
# (libmicrohttpd). docs/architecture.md, "heirloomctl", says why these.
hl_require(JSONC json-c libjson-c-dev)
hl_require(MHD libmicrohttpd libmicrohttpd-dev)
if(HL_TESTS)
  hl_require(CMOCKA cmocka libcmocka-dev)
endif()

find_package(Threads REQUIRED)

# jemalloc replaces malloc in the daemons. Under ASan or TSan the sanitizer
# must own malloc (the Redis MALLOC=libc rule), so the daemons use libc then.
if(HL_SANITIZE)
  set(HL_DAEMON_MALLOC "")
  set(HL_HAVE_JEMALLOC 0)
else()
  set(HL_DAEMON_MALLOC PkgConfig::JEMALLOC)
  set(HL_HAVE_JEMALLOC 1)
endif()
