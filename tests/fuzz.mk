# Fuzzing with libFuzzer (clang). One target per tests/fuzz_NAME.c:
#   rules    the rule compiler (and an engine over what it accepts)
#   decode   the payload decoder (JSON objects, SenML packs, bare numbers)
#   http     the HTTP API: raw bytes through h2o's request parser into the routes
#   journal  journal recovery: damaged segment files, open, replay, append
#   config   the configuration file parser and `--set KEY=VALUE`
#   chunk    the chunk codec: any bytes to the decoder, samples through every codec
#   promql   the PromQL parser, and the evaluator over what it accepts
#   head_block  the open head's block codec: any bytes to the decoder, samples round trip
#
#   make fuzz                 every target FUZZ_SECONDS (default 300) in turn, then
#                             one table: executions, exec/s, crashes, corpus size
#   make fuzz-short           every target FUZZ_SHORT_SECONDS (default 7): `make test`
#   make fuzz-NAME            one target FUZZ_SECONDS
#   FUZZ_TARGETS="decode http" limits the targets of `make fuzz`
#
# Seeds live in tests/fuzz/corpus/NAME/ and are never modified; new inputs a
# run finds go to build/fuzz/corpus/NAME, crashes to build/fuzz/crashes/.
# The code under test is compiled once into build/fuzz/obj (instrumented for
# coverage, ASan and UBSan) and archived; each target links what it uses.
FUZZ_CC            := clang
FUZZ_SAN           := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS        := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $(FUZZ_SAN)
FUZZ_LDFLAGS       := -fsanitize=fuzzer $(FUZZ_SAN)
FUZZ_SECONDS       ?= 300
FUZZ_SHORT_SECONDS ?= 7
FUZZ_ALL           := $(patsubst tests/fuzz_%.c,%,$(wildcard tests/fuzz_*.c))
FUZZ_TARGETS       ?= $(FUZZ_ALL)

FUZZ_LIB  := $(BUILD)/fuzz/libcitybrain.a
FUZZ_OBJS := $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(LIB_SRCS))

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-FUZZ $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/obj/base/version.o: CPPFLAGS += -DCB_VERSION='"fuzz"'
# The targets themselves are held to the house's warnings.
$(BUILD)/fuzz/obj/tests/fuzz_%.o: tests/fuzz_%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-FUZZ $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) $(WARN) -MMD -MP -c $< -o $@

# Kept between runs (make would delete them as intermediate files).
.SECONDARY: $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(wildcard tests/fuzz_*.c))

$(FUZZ_LIB): $(FUZZ_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/tests/fuzz_%.o $(FUZZ_LIB)
	@$(if $(Q),echo "  LD-FUZZ $@")
	$(Q)$(FUZZ_CC) $(FUZZ_LDFLAGS) $^ -o $@ $(LDLIBS)

fuzz-build: $(addprefix $(BUILD)/fuzz/fuzz_,$(FUZZ_TARGETS))
fuzz: fuzz-build
	$(Q)scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
fuzz-short: fuzz-build
	$(Q)scripts/fuzz.sh $(FUZZ_SHORT_SECONDS) $(FUZZ_TARGETS)
fuzz-%: $(BUILD)/fuzz/fuzz_%
	$(Q)scripts/fuzz.sh $(FUZZ_SECONDS) $*
.PHONY: fuzz fuzz-short fuzz-build
