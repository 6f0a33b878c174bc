# make bench: every benchmark in bench/, one markdown table, BENCHMARKS.md.
#
# Plug-in convention: each bench/NAME.mk (other than this file) adds its
# program to BENCH_PROGS and a rule that builds it, e.g.
#     BENCH_PROGS += $(BUILD)/bench/bench_storage
#     $(BUILD)/bench/bench_storage: bench/bench_storage.c $(REL_LIB_OBJS) ; ...
# bench/run.sh runs every program of BENCH_PROGS; each prints `key value`
# lines on stdout. A missing or failing program shows as "not run".

BENCH_CFLAGS := -O2 -g
# The release objects minus main, for bench programs that call the modules.
REL_LIB_OBJS := $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS))
BENCH_TOOLS := $(BUILD)/bench/count_sub $(BUILD)/bench/flood_pub $(BUILD)/bench/alert_sub
BENCH_PROGS :=
# The other helpers' programs, run when they build (bench/run.sh shows the
# ones that do not as "not run").
BENCH_KNOWN := $(addprefix $(BUILD)/bench/,bench_rules bench_storage bench_alerts bench_api)

# The subscribers share bench/mqtt_sub.c (connect, subscribe, wait).
$(BUILD)/bench/count_sub $(BUILD)/bench/alert_sub: $(BUILD)/bench/%: bench/%.c bench/mqtt_sub.c bench/mqtt_sub.h base/net.c base/net.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CPPFLAGS) $(BENCH_CFLAGS) $(WARN) $< bench/mqtt_sub.c base/net.c -o $@ -lpaho-mqtt3as -lpthread

$(BUILD)/bench/flood_pub: bench/flood_pub.c base/net.c base/net.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CPPFLAGS) $(BENCH_CFLAGS) $(WARN) $< base/net.c -o $@ -lpaho-mqtt3as -lm -lpthread

-include $(filter-out bench/bench.mk,$(wildcard bench/*.mk))

bench-tools: $(BENCH_TOOLS)
.PHONY: bench-tools

# Each benchmark program is built on its own, so one that does not compile
# shows as "not run" instead of stopping the others.
bench: setup
	$(Q)$(MAKE) --no-print-directory $(BUILD)/citybrain $(BENCH_TOOLS)
	$(Q)for p in $(sort $(BENCH_PROGS) $(BENCH_KNOWN)); do \
	  $(MAKE) --no-print-directory $$p >/dev/null 2>&1 || echo "bench: $$p not built" >&2; done
	$(Q)bench/run.sh $(sort $(BENCH_PROGS) $(BENCH_KNOWN))
.PHONY: bench
