# citybrain: one non-recursive Makefile.
#   make            build/citybrain (optimised, -g)
#   make test       sanitizer build, CUnit unit suites, integration tests, short fuzz run
#   make bench      every benchmark in bench/, one table (BENCHMARKS.md keeps the latest)
#   make cluster-test  partitions x twins on a three-node RabbitMQ cluster (also in make test)
#   make bench-steady  the steady-state benchmark alone (bench/steady.sh)
#   make demo       private mosquitto + simulator + engine + dashboard URL
#   make fuzz       longer libFuzzer runs, one table of executions per target
#   make soak       an hour of the simulated city at half capacity; flat curves or fail
#   V=1             show full commands; WERROR=1 (set by CI) turns warnings into errors
# Every module's sources are found by wildcard, so a new file needs no edit here.

.DEFAULT_GOAL := all
SHELL := /bin/bash

CC      ?= cc
BUILD   := build
# The modules, lowest floor first, from the one table of floors.
MODULES := $(shell scripts/floors.sh --modules)
PKGS    := libuv libcjson sqlite3 libcurl libh2o
ROOT    := $(CURDIR)

WARN    := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(WERROR),1)
WARN    += -Werror
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CPPFLAGS := -D_GNU_SOURCE -I. $(PKG_CFLAGS) -DCB_SOURCE_DIR='"$(ROOT)"'
# Only base/version.c sees the version, and it is rebuilt every time.
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
CFLAGS  ?= -O2 -g
LDLIBS  := -lpaho-mqtt3as -lrabbitmq $(PKG_LIBS) -lssl -lcrypto -lz -lm -lpthread

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRCS  := $(filter-out cmd/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
MAIN_SRC  := cmd/main.c
UNIT_SRCS := $(wildcard tests/test_*.c)
ITEST_SRCS:= $(wildcard tests/integration/itest_*.c)
SUPPORT_SRCS := $(wildcard tests/support/*.c)

# ---- release build -------------------------------------------------------
REL_OBJS := $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS) $(MAIN_SRC))

$(BUILD)/rel/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c $< -o $@

$(BUILD)/citybrain: $(REL_OBJS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

all: $(BUILD)/citybrain
.PHONY: all

# ---- sanitizer build for tests ------------------------------------------
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_CFLAGS := -O1 -g $(SAN)
ASAN_LIB_OBJS := $(patsubst %.c,$(BUILD)/asan/%.o,$(LIB_SRCS))

$(BUILD)/asan/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-SAN  $<")
	$(Q)$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) $(WARN) -MMD -MP -c $< -o $@

$(BUILD)/asan/citybrain: $(ASAN_LIB_OBJS) $(BUILD)/asan/cmd/main.o
	@$(if $(Q),echo "  LD-SAN  $@")
	$(Q)$(CC) $(ASAN_CFLAGS) $^ -o $@ $(LDLIBS)

# Each tests/test_NAME.c defines `void cb_test_suite_NAME(void)`; the runner
# calls them all. The list is generated so adding a suite edits nothing else.
$(BUILD)/asan/unit_registry.c: $(UNIT_SRCS) Makefile
	@mkdir -p $(dir $@)
	$(Q)tests/gen_registry.sh $(UNIT_SRCS) > $@
$(BUILD)/asan/itest_registry.c: $(ITEST_SRCS) Makefile
	@mkdir -p $(dir $@)
	$(Q)tests/gen_registry.sh $(ITEST_SRCS) > $@
$(BUILD)/asan/%_registry.o: $(BUILD)/asan/%_registry.c
	$(Q)$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) -c $< -o $@

SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/asan/%.o,$(SUPPORT_SRCS))
UNIT_OBJS    := $(patsubst %.c,$(BUILD)/asan/%.o,$(UNIT_SRCS)) $(BUILD)/asan/tests/runner.o
ITEST_OBJS   := $(patsubst %.c,$(BUILD)/asan/%.o,$(ITEST_SRCS)) $(BUILD)/asan/tests/runner.o

$(BUILD)/asan/test_unit: $(UNIT_OBJS) $(BUILD)/asan/unit_registry.o $(SUPPORT_OBJS) $(ASAN_LIB_OBJS)
	@$(if $(Q),echo "  LD-SAN  $@")
	$(Q)$(CC) $(ASAN_CFLAGS) $^ -o $@ $(LDLIBS) -lcunit -lpaho-mqtt3cs

$(BUILD)/asan/test_integration: $(ITEST_OBJS) $(BUILD)/asan/itest_registry.o $(SUPPORT_OBJS) $(ASAN_LIB_OBJS)
	@$(if $(Q),echo "  LD-SAN  $@")
	$(Q)$(CC) $(ASAN_CFLAGS) $^ -o $@ $(LDLIBS) -lcunit -lpaho-mqtt3cs

setup:
	$(Q)scripts/setup.sh
.PHONY: setup

# Tests find the binaries under test through these variables.
export CB_BIN      := $(ROOT)/$(BUILD)/asan/citybrain
export CB_ROOT     := $(ROOT)
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1

test: setup
	$(Q)scripts/floors.sh
	$(Q)$(MAKE) --no-print-directory $(BUILD)/asan/test_unit $(BUILD)/asan/test_integration $(BUILD)/asan/citybrain $(BUILD)/citybrain dashboard
	$(Q)$(BUILD)/asan/test_unit
	$(Q)$(BUILD)/asan/test_integration
	$(Q)for t in $(sort $(wildcard tests/*.test.sh)); do echo "== $$t"; bash $$t || exit 1; done
.PHONY: test

# Partitions and twins on three RabbitMQ nodes (docs/cluster.md); make test
# runs it too, as tests/cluster.test.sh.
cluster-test: setup
	$(Q)$(MAKE) --no-print-directory $(BUILD)/asan/citybrain
	$(Q)bash tests/cluster.test.sh
.PHONY: cluster-test

unit: $(BUILD)/asan/test_unit
	$(Q)$(BUILD)/asan/test_unit $(SUITE)
itest: $(BUILD)/asan/test_integration $(BUILD)/asan/citybrain
	$(Q)$(BUILD)/asan/test_integration $(SUITE)
.PHONY: unit itest

-include bench/bench.mk
-include tests/fuzz.mk
-include sim/demo.mk
-include api/dashboard.mk

clean:
	rm -rf $(BUILD)
.PHONY: clean

$(BUILD)/rel/base/version.o $(BUILD)/asan/base/version.o: CPPFLAGS += -DCB_VERSION='"$(VERSION)"'
$(BUILD)/rel/base/version.o $(BUILD)/asan/base/version.o: FORCE
FORCE:
.PHONY: FORCE

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
