# The storage benchmark: `make bench-storage` (the coordinator includes this
# file from the Makefile or bench/bench.mk). Prints `key value` lines.
BENCH_STORAGE_OBJS := $(patsubst %.c,$(BUILD)/rel/%.o,$(LIB_SRCS))

$(BUILD)/bench/bench_storage: bench/bench_storage.c $(BENCH_STORAGE_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $< $(BENCH_STORAGE_OBJS) -o $@ $(LDLIBS)

bench-storage: $(BUILD)/bench/bench_storage
	$(Q)$(BUILD)/bench/bench_storage
.PHONY: bench-storage
BENCH_TARGETS += bench-storage
