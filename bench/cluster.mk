# Cluster benchmark (bench/bench_cluster.sh, docs/cluster.md): throughput and
# publish-to-alert latency through twins on three RabbitMQ nodes against one
# engine on a single mosquitto, same run. Included by bench/bench.mk; alone:
# make bench-cluster
BENCH_PROGS += $(BUILD)/bench/bench_cluster

$(BUILD)/bench/bench_cluster: bench/bench_cluster.sh
	@mkdir -p $(dir $@)
	$(Q)cp $< $@ && chmod +x $@

bench-cluster: $(BUILD)/bench/bench_cluster $(BUILD)/citybrain $(BENCH_TOOLS)
	$(Q)$(BUILD)/bench/bench_cluster
.PHONY: bench-cluster
