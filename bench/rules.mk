# The rule engine benchmark (bench/bench.mk includes every bench/*.mk).
# Prints `key value` lines; `make bench-rules` runs it alone.
BENCH_PROGS += $(BUILD)/bench/bench_rules

$(BUILD)/bench/bench_rules: bench/bench_rules.c $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) -O2 -g $(WARN) $< $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS)) -o $@ $(LDLIBS)

bench-rules: $(BUILD)/bench/bench_rules
	$(Q)$(BUILD)/bench/bench_rules
.PHONY: bench-rules
