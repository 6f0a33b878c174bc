# The dashboard's one third-party library (uPlot), fetched from npm at a
# pinned version and copied into api/dashboard/vendor/ (gitignored), which the
# engine serves locally: the page loads nothing from the internet.
#   make dashboard     fetch (once) and copy
DASH_DIR    := api/dashboard
DASH_VENDOR := $(DASH_DIR)/vendor/uPlot.iife.min.js $(DASH_DIR)/vendor/uPlot.min.css

$(DASH_DIR)/node_modules/uplot/package.json: $(DASH_DIR)/package.json
	@echo "  NPM     $(DASH_DIR)"
	$(Q)cd $(DASH_DIR) && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; \
	  else npm install --no-audit --no-fund --silent; fi
	$(Q)touch $@

$(DASH_DIR)/vendor/uPlot.iife.min.js: $(DASH_DIR)/node_modules/uplot/package.json
	@mkdir -p $(dir $@)
	$(Q)cp $(DASH_DIR)/node_modules/uplot/dist/uPlot.iife.min.js $@
$(DASH_DIR)/vendor/uPlot.min.css: $(DASH_DIR)/node_modules/uplot/package.json
	@mkdir -p $(dir $@)
	$(Q)cp $(DASH_DIR)/node_modules/uplot/dist/uPlot.min.css $@

dashboard: $(DASH_VENDOR)
.PHONY: dashboard
