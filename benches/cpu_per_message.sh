#!/usr/bin/env bash
# filterd's own CPU per message under Postfix's load generator: smtp-source -> filterd ->
# smtp-sink on loopback, CPU read from /proc/PID/stat after 20 000 messages. Steadier than
# a throughput ratio on a shared machine (used for "metrics on against off" in README).
#
#   benches/cpu_per_message.sh target/release/filterd [EXTRA_TOML]
#   METRICS="" MODEL=true benches/cpu_per_message.sh target/release/filterd
#
# METRICS: the [metrics] listen address ("" = off; default 127.0.0.1:12527); MODEL: true or
# false (default). Bayes, sender authentication and postconf are off. Needs root (smtp-sink
# -u nobody) and Postfix's smtp-source and smtp-sink.
set -euo pipefail
bin=$(realpath "$1")
extra=${2-}
sink_port=12525
port=12526
dir=$(mktemp -d)
trap 'kill $fp $sp 2>/dev/null || true; rm -rf "$dir"' EXIT
smtp-sink -u nobody 127.0.0.1:$sink_port 256 &
sp=$!
cat > "$dir/filterd.toml" <<EOT
[server]
listen = ["127.0.0.1:$port"]
max_connections = 256
[next_hop]
address = "127.0.0.1:$sink_port"
[log]
level = "warn"
[bayes]
enabled = false
state_dir = "$dir/state"
[model]
enabled = ${MODEL-false}
[auth]
enabled = false
[quarantine]
dir = "$dir/q"
[metrics]
listen = "${METRICS-127.0.0.1:12527}"
[local_domains]
postconf = false
domains = ["example.net"]
$extra
EOT
"$bin" --config "$dir/filterd.toml" 2> "$dir/err.log" &
fp=$!
sleep 1
start=$(date +%s.%N)
smtp-source -s 16 -l 5000 -m 20000 -f alice@example.org -t bob@example.net 127.0.0.1:$port > /dev/null
end=$(date +%s.%N)
ticks=$(awk '{print $14+$15}' /proc/$fp/stat)
hz=$(getconf CLK_TCK)
echo "rate $(echo "20000/($end-$start)" | bc -l | cut -c1-7) msg/s; filterd cpu/msg $(echo "$ticks*1000000/$hz/20000" | bc -l | cut -c1-6) us"
