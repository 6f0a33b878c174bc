# make demo: private mosquitto + the engine with etc/rules + the simulator
# playing bench/scenarios/demo.scn; prints the console's URL and an operator
# token (scripts/demo.sh). Builds the engine and the console's chart library
# (make dashboard: uPlot from npm, pinned by api/dashboard/package-lock.json).
demo: setup
	$(Q)$(MAKE) --no-print-directory -j2 $(BUILD)/citybrain dashboard
	$(Q)scripts/demo.sh --no-build
.PHONY: demo

# make soak: the simulated city at half capacity for SOAK_MINUTES (default 60)
# with the API polled as a dashboard would; passes when RSS, open files,
# threads, loop lag, queue depths, database, WAL and journal are flat after the
# warm-up; writes build/soak/soak.csv and soak.png (scripts/soak.sh). Not part
# of `make test`.
soak:
	$(Q)scripts/setup.sh soak
	$(Q)$(MAKE) --no-print-directory -j2 $(BUILD)/citybrain
	$(Q)scripts/soak.sh
.PHONY: soak
