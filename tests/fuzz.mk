# Fuzzing with libFuzzer (clang): `make fuzz` runs each target about five
# minutes; `make fuzz-short` (and tests/fuzz.test.sh in `make test`) about
# twenty seconds. Seeds live in tests/fuzz/corpus/TARGET/; new inputs found by
# a run go to build/fuzz/corpus/TARGET (the seeds are never modified).
FUZZ_CC      := clang
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SECONDS ?= 300

# rules: the rule compiler (and an engine over what it accepts)
FUZZ_RULES_SRCS := tests/fuzz_rules.c $(wildcard rules/*.c) base/strbuf.c base/clock.c

$(BUILD)/fuzz/fuzz_rules: $(FUZZ_RULES_SRCS) $(wildcard rules/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) $(FUZZ_RULES_SRCS) -o $@ -lm

fuzz-rules: $(BUILD)/fuzz/fuzz_rules
	@mkdir -p $(BUILD)/fuzz/corpus/rules
	$(Q)$(BUILD)/fuzz/fuzz_rules -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	    -rss_limit_mb=1024 -print_final_stats=1 $(BUILD)/fuzz/corpus/rules tests/fuzz/corpus/rules
fuzz-rules-short:
	$(Q)$(MAKE) --no-print-directory fuzz-rules FUZZ_SECONDS=20

# chunk: the chunk decoder on any bytes, and encode -> decode of fuzzed samples
FUZZ_CHUNK_SRCS := tests/fuzz_chunk.c storage/chunk.c

$(BUILD)/fuzz/fuzz_chunk: $(FUZZ_CHUNK_SRCS) storage/chunk.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) $(FUZZ_CHUNK_SRCS) -o $@ -lm

fuzz-chunk: $(BUILD)/fuzz/fuzz_chunk
	@mkdir -p $(BUILD)/fuzz/corpus/chunk
	$(Q)$(BUILD)/fuzz/fuzz_chunk -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	    -rss_limit_mb=1024 -print_final_stats=1 $(BUILD)/fuzz/corpus/chunk tests/fuzz/corpus/chunk
fuzz-chunk-short:
	$(Q)$(MAKE) --no-print-directory fuzz-chunk FUZZ_SECONDS=20

fuzz: fuzz-chunk
fuzz-short: fuzz-chunk-short
.PHONY: fuzz-chunk fuzz-chunk-short

fuzz: fuzz-rules
fuzz-short: fuzz-rules-short
.PHONY: fuzz fuzz-short fuzz-rules fuzz-rules-short
