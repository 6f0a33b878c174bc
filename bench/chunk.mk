# The chunk codec benchmark: `make bench-chunk` (bench/bench.mk includes
# every bench/*.mk). Prints `key value` lines; it runs build/citybrain sim
# for the city and promtool (Debian's prometheus) when installed.
BENCH_PROGS += $(BUILD)/bench/bench_chunk

$(BUILD)/bench/bench_chunk: bench/bench_chunk.c $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) -O2 -g $(WARN) $< $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS)) -o $@ $(LDLIBS)

bench-chunk: $(BUILD)/bench/bench_chunk $(BUILD)/citybrain
	$(Q)CB_BIN=$(ROOT)/$(BUILD)/citybrain $(BUILD)/bench/bench_chunk
.PHONY: bench-chunk
