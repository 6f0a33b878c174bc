# make demo: private mosquitto + the engine with etc/rules + the simulator
# playing bench/scenarios/demo.scn; prints the dashboard URL (scripts/demo.sh).
demo: setup
	$(Q)$(MAKE) --no-print-directory -j2 $(BUILD)/citybrain
	$(Q)scripts/demo.sh --no-build
.PHONY: demo
