#!/usr/bin/env bash
# Failure-detector false positives under CPU saturation: five `lan`-profile nodes on
# 127.0.0.1, then four busy-loop hogs on the machine for SECONDS (default 120), then a count of
# members declared down while the hogs ran. Every process is stopped at the end.
#
#   scripts/gossip-saturation.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-120}
cargo build --release -q -p cadre-actors --bin cadre
B=$PWD/target/release/cadre
DIR=$(mktemp -d)
export CADRE_SECRET=saturation-$$ CADRE_LOG=info
P=18370
PIDS=()
HOGS=()
cleanup() { kill "${HOGS[@]}" "${PIDS[@]}" 2>/dev/null || true; }
trap cleanup EXIT
"$B" node --listen 127.0.0.1:$P --name s0 >"$DIR/s0.log" 2>&1 & PIDS+=($!)
sleep 1
for i in 1 2 3 4; do
  "$B" node --listen 127.0.0.1:$((P + i)) --name "s$i" --seed 127.0.0.1:$P >"$DIR/s$i.log" 2>&1 & PIDS+=($!)
done
sleep 5
"$B" members --node 127.0.0.1:$P
START=$(date -u +%Y-%m-%dT%H:%M:%S)
for _ in 1 2 3 4; do ( end=$((SECONDS + DURATION)); while [ $SECONDS -lt $end ]; do :; done ) & HOGS+=($!); done
wait "${HOGS[@]}"
END=$(date -u +%Y-%m-%dT%H:%M:%S)
"$B" members --node 127.0.0.1:$P
DOWN=$(cat "$DIR"/s*.log | grep 'member down' | awk -v s="$START" -v e="$END" '$1 >= s && $1 <= e' | wc -l)
echo "members declared down during ${DURATION}s of saturation: $DOWN"
kill -TERM "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true
