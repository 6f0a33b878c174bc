# A private three-node RabbitMQ cluster (MQTT plugin, quorum session queues)
# on loopback, for tests/cluster.test.sh and bench. Source it after
# scripts/broker.sh (free_port); it defines:
#
#   rabbit_cluster_start DIR N   starts epmd (its own port, 127.0.0.1) and N
#                                nodes, waits until all N are running in one
#                                cluster; sets EPMD_PID, RNODE[i], RPID[i],
#                                RAMQP[i], RMQTT[i] (i = 1..N). Returns 1 with
#                                the nodes' logs on stderr when the cluster
#                                does not form within 180 s.
#   rabbit_node_start DIR i      (re)starts node i with the ports it had
#   rabbit_node_wait DIR i       waits (180 s at most) until node i runs
#   rabbit_mqtt_wait DIR i       waits (60 s at most) until node i takes MQTT
#   rabbit_ctl DIR i ARGS...     rabbitmqctl against node i
#   rabbit_cluster_stop          kill -9 of every node and epmd, by pid
#
# Every process is started here and stopped by its pid; everything listens on
# 127.0.0.1 (AMQP, MQTT, the Erlang distribution, epmd). Runs as root (as the
# tests do) or as the owner of DIR: the Debian wrapper /usr/sbin/rabbitmq-server
# would drop to the rabbitmq user, so the nodes run from /usr/lib/rabbitmq/bin.

RABBIT_BIN=/usr/lib/rabbitmq/bin

rabbit_env() { # DIR i: the environment of node i, on stdout as NAME=VALUE words
  local dir=$1 i=$2 nd="$1/node$2"
  echo HOME="$dir" ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_NODENAME="${RNODE[$i]}" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="${RAMQP[$i]}" RABBITMQ_DIST_PORT="${RDIST[$i]}" \
    RABBITMQ_CONFIG_FILE="$nd/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$nd/mnesia" RABBITMQ_LOG_BASE="$nd/log" RABBITMQ_PID_FILE="$nd/pid" \
    RABBITMQ_CTL_DIST_PORT_MIN="${RCTL[$i]}" RABBITMQ_CTL_DIST_PORT_MAX="$((RCTL[i] + 9))" \
    RUNNING_UNDER_SYSTEMD=1
}

rabbit_ctl() { # DIR i ARGS...
  local dir=$1 i=$2
  shift 2
  env $(rabbit_env "$dir" "$i") "$RABBIT_BIN/rabbitmqctl" -n "${RNODE[$i]}" "$@"
}

rabbit_node_start() { # DIR i
  local dir=$1 i=$2
  # RUNNING_UNDER_SYSTEMD makes the script exec erl: $! is the node itself.
  # Small: one scheduler, four async threads; distribution on loopback only.
  env $(rabbit_env "$dir" "$i") \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +A 4 -kernel inet_dist_use_interface {127,0,0,1}" \
    setsid "$RABBIT_BIN/rabbitmq-server" >"$dir/node$i/stdout.log" 2>&1 </dev/null &
  RPID[$i]=$!
}

rabbit_node_wait() { # DIR i
  local dir=$1 i=$2
  for _ in $(seq 180); do
    rabbit_ctl "$dir" "$i" await_startup --timeout 5 >/dev/null 2>&1 && return 0
    kill -0 "${RPID[$i]}" 2>/dev/null || break
    sleep 1
  done
  echo "rabbit: node ${RNODE[$i]} did not start; its log:" >&2
  tail -n 30 "$dir/node$i/stdout.log" "$dir"/node"$i"/log/*.log >&2 2>/dev/null
  return 1
}

rabbit_cluster_start() { # DIR N
  local dir=$1 n=$2 i tag
  RN=$n
  tag=$(free_port)
  EPMD_PORT=$(free_port)
  printf '[rabbitmq_mqtt].\n' >"$dir/enabled_plugins"
  printf 'cbtestcookie%s' "$tag" >"$dir/.erlang.cookie"
  chmod 400 "$dir/.erlang.cookie"
  epmd -port "$EPMD_PORT" -address 127.0.0.1 >"$dir/epmd.log" 2>&1 &
  EPMD_PID=$!
  for i in $(seq "$n"); do
    RNODE[$i]="cb${tag}n$i@localhost"
    RAMQP[$i]=$(free_port)
    RMQTT[$i]=$(free_port)
    RDIST[$i]=$(free_port)
    RCTL[$i]=$(free_port)
  done
  for i in $(seq "$n"); do
    mkdir -p "$dir/node$i"
    {
      echo "listeners.tcp.default = 127.0.0.1:${RAMQP[$i]}"
      echo "mqtt.listeners.tcp.default = 127.0.0.1:${RMQTT[$i]}"
      echo "mqtt.durable_queue_type = quorum"
      echo "mqtt.allow_anonymous = true"
      echo "loopback_users = none"
      echo "cluster_formation.peer_discovery_backend = classic_config"
      for j in $(seq "$n"); do
        echo "cluster_formation.classic_config.nodes.$j = ${RNODE[$j]}"
      done
    } >"$dir/node$i/rabbitmq.conf"
  done
  # Node 1 first, the others then join it: started all at once, a node's MQTT
  # plugin can end up outside the cluster's client id registry and refuse
  # every connection ("client ID registration timed out"; seen once in four).
  rabbit_node_start "$dir" 1
  rabbit_node_wait "$dir" 1 || return 1
  for i in $(seq 2 "$n"); do rabbit_node_start "$dir" "$i"; done
  for i in $(seq 2 "$n"); do rabbit_node_wait "$dir" "$i" || return 1; done
  # One cluster: every node lists all n as running.
  for _ in $(seq 120); do
    local running
    running=$(rabbit_ctl "$dir" 1 cluster_status --formatter json 2>/dev/null |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null)
    [ "$running" = "$n" ] && break
    sleep 1
  done
  [ "$running" = "$n" ] || { echo "rabbit: the $n nodes did not form one cluster" >&2; return 1; }
  for i in $(seq "$n"); do rabbit_mqtt_wait "$dir" "$i" || return 1; done
}

rabbit_mqtt_wait() { # DIR i: waits (60 s at most) until node i takes a QoS 1 publish
  local dir=$1 i=$2
  for _ in $(seq 60); do
    mosquitto_pub -h 127.0.0.1 -p "${RMQTT[$i]}" -i "cbt-probe-$i" -q 1 -t cbt/probe -m x \
      2>/dev/null && return 0
    sleep 1
  done
  echo "rabbit: node ${RNODE[$i]} does not take MQTT connections; its log:" >&2
  tail -n 5 "$dir"/node"$i"/log/*.log >&2 2>/dev/null
  return 1
}

rabbit_cluster_stop() {
  local i
  for i in $(seq "${RN:-0}"); do
    [ -n "${RPID[$i]:-}" ] && kill -9 "${RPID[$i]}" 2>/dev/null && wait "${RPID[$i]}" 2>/dev/null
  done
  [ -n "${EPMD_PID:-}" ] && kill -9 "$EPMD_PID" 2>/dev/null && wait "$EPMD_PID" 2>/dev/null
  return 0
}
