# A private mosquitto on a free loopback port, for scripts/demo.sh and
# scripts/soak.sh. Source it; it defines:
#
#   free_port            prints a free TCP port on 127.0.0.1
#   start_broker DIR     writes DIR/mosquitto.conf (127.0.0.1 only, anonymous,
#                        no persistence), starts mosquitto in the background
#                        with its log in DIR/mosquitto.log, waits until it
#                        takes a publish (5 s at most), and sets BPORT (its
#                        port) and MOSQ (its PID: the caller stops it)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_broker() {
  local dir=$1
  BPORT=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n' \
    "$BPORT" > "$dir/mosquitto.conf"
  # its own session: a terminal's Ctrl-C reaches the script, which stops it once
  setsid mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
  MOSQ=$!
  for _ in $(seq 100); do
    mosquitto_pub -p "$BPORT" -t citybrain/ping -m x 2>/dev/null && break
    sleep 0.05
  done
}
