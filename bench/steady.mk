# The steady-state benchmark alone: `make bench-steady` (bench/steady.sh; also
# run by `make bench`). BENCH_STEADY_* and BENCH_QUICK=1 as documented there.
bench-steady: setup
	$(Q)$(MAKE) --no-print-directory $(BUILD)/citybrain $(BUILD)/bench/flood_pub $(BUILD)/bench/count_sub
	$(Q)bench/steady.sh
.PHONY: bench-steady
BENCH_TARGETS += bench-steady
