# Outbox scheduling benchmark (bench/bench_outbox.c): what queueing one
# webhook notification costs with 100 (baseline), 10,000 and 100,000 queued.
# Included by bench/bench.mk; alone: make bench-outbox
BENCH_PROGS += $(BUILD)/bench/bench_outbox

$(BUILD)/bench/bench_outbox: bench/bench_outbox.c tests/support/store_fixture.c \
		$(BUILD)/bench/libcb_alerts.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) -O2 -g $(WARN) $^ -o $@ $(LDLIBS)

bench-outbox: $(BUILD)/bench/bench_outbox
	$(Q)$(BUILD)/bench/bench_outbox
.PHONY: bench-outbox
