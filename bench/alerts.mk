# Alert notification benchmark (bench/bench_alerts.c): transitions/s through
# the notification path into a real mosquitto, p99 transition -> PUBLISH received.
# Included from bench/bench.mk:  -include bench/alerts.mk ; run: make bench-alerts
BENCH_ALERTS_LIB := $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS))
# weak fallbacks of rules/' transition functions while rules/ is not merged
BENCH_ALERTS_FALLBACK := $(wildcard tests/support/transition_fallback.c)

# An archive, so the link takes only the objects the benchmark needs.
$(BUILD)/bench/libcb_alerts.a: $(BENCH_ALERTS_LIB)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/bench/bench_alerts: bench/bench_alerts.c $(BENCH_ALERTS_FALLBACK) $(BUILD)/bench/libcb_alerts.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $^ -o $@ $(LDLIBS)

bench-alerts: $(BUILD)/bench/bench_alerts
	$(Q)$(BUILD)/bench/bench_alerts $(BENCH_ALERTS_N)
.PHONY: bench-alerts
