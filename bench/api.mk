# The HTTP API benchmark: `make bench-api` (bench/bench.mk includes every
# bench/*.mk). Prints `key value` lines. Linked against an archive of the
# release objects so only what it uses is pulled in.
BENCH_API_LIB := $(BUILD)/bench/libcitybrain_api_bench.a

$(BENCH_API_LIB): $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/bench/bench_api: bench/bench_api.c $(BENCH_API_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $< $(BENCH_API_LIB) -o $@ $(LDLIBS)

bench-api: $(BUILD)/bench/bench_api
	$(Q)$(BUILD)/bench/bench_api
.PHONY: bench-api
BENCH_PROGS += $(BUILD)/bench/bench_api
BENCH_TARGETS += bench-api
