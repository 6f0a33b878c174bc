# make demo: private mosquitto + the engine with etc/rules + the simulator
# playing bench/scenarios/demo.scn; prints the console's URL and an operator
# token (scripts/demo.sh). Builds the engine and the console's chart library
# (make dashboard: uPlot from npm, pinned by api/dashboard/package-lock.json).
demo: setup
	$(Q)$(MAKE) --no-print-directory -j2 $(BUILD)/citybrain dashboard
	$(Q)scripts/demo.sh --no-build
.PHONY: demo
