# Alert notification benchmark (bench/bench_alerts.c): transitions/s through
# the notification path into a real mosquitto, p99 transition -> PUBLISH
# received. Included by bench/bench.mk; alone: make bench-alerts
BENCH_PROGS += $(BUILD)/bench/bench_alerts

# An archive of the release objects, so the link takes only what the
# benchmark needs (not the daemon and its MQTT client).
$(BUILD)/bench/libcb_alerts.a: $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/bench/bench_alerts: bench/bench_alerts.c tests/support/store_fixture.c \
		$(BUILD)/bench/libcb_alerts.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) -O2 -g $(WARN) $^ -o $@ $(LDLIBS)

bench-alerts: $(BUILD)/bench/bench_alerts
	$(Q)$(BUILD)/bench/bench_alerts $(BENCH_ALERTS_N)
.PHONY: bench-alerts
