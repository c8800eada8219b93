#!/usr/bin/env bash
# gateway-side-by-side.sh: events per CPU-second of spectacles' gateway and of
# spec-tacles/gateway on the same simulated flood (issue 13), interleaved.
#
# Usage: gateway-side-by-side.sh SG_GATEWAY_BIN [SPECTACLES_BIN] [ROUNDS] [SECONDS]
#   SG_GATEWAY_BIN  a spec-tacles/gateway binary, built by you (this repository
#                   holds none of its code); it reads its configuration from the
#                   environment (-config /nonexistent.toml) with BROKER_TYPE=redis
#   SPECTACLES_BIN  our binary (default: built from this checkout)
#   ROUNDS (default 5) rounds of SECONDS (default 20) per run; environment:
#   WARMUP=3 seconds before measuring; REDIS_PORT=6393 the port of a private
#   redis-server this script starts and flushes between runs (it refuses a
#   port something already answers on)
# Each run: a fresh `spectacles simulate --rate -1 --shards 1 --guilds 10`
# (zstd-stream, which is all spec-tacles/gateway offers), one gateway alone,
# publishing MESSAGE_CREATE, MESSAGE_DELETE, TYPING_START,
# MESSAGE_REACTION_ADD and GUILD_CREATE to Redis streams. After WARMUP the
# gateway's utime+stime (/proc/PID/stat, that process only) and the streams'
# entries-added are read, and again SECONDS later; the streams are trimmed
# every 0.5 s (XTRIM MAXLEN ~ 1000; entries-added is not affected). The order
# alternates per round (ours first in odd rounds). Prints each run, each
# round's ratio (ours / theirs events per CPU-second) and min/median/max.
# Needs redis-server, redis-cli, awk; Linux (/proc).
set -euo pipefail
SG=${1:?usage: gateway-side-by-side.sh SG_GATEWAY_BIN [SPECTACLES_BIN] [ROUNDS] [SECONDS]}
OURS=${2:-}
ROUNDS=${3:-5}
SECS=${4:-20}
WARMUP=${WARMUP:-3}
PORT=${REDIS_PORT:-6393}
EVENTS=MESSAGE_CREATE,MESSAGE_DELETE,TYPING_START,MESSAGE_REACTION_ADD,GUILD_CREATE
INTENTS=GUILDS,GUILD_MESSAGES,GUILD_MESSAGE_REACTIONS,GUILD_MESSAGE_TYPING
DIR=$(mktemp -d "${TMPDIR:-/tmp}/gwmeasure.XXXXXX")
if [ -z "$OURS" ]; then
  repo=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
  echo "building spectacles ($(git -C "$repo" rev-parse --short HEAD))" >&2
  (cd "$repo" && go build -o "$DIR/spectacles" .)
  OURS=$DIR/spectacles
fi
TCK=$(getconf CLK_TCK)
R="redis-cli -p $PORT"

cpu() { awk '{print $14+$15}' /proc/$1/stat; }          # ticks, this process only
added() { local n=0 s v; for s in ${EVENTS//,/ }; do
  v=$($R xinfo stream "$s" 2>/dev/null | awk 'p{print; exit} /^entries-added$/{p=1}'); n=$((n+${v:-0})); done; echo $n; }

if redis-cli -p "$PORT" ping >/dev/null 2>&1; then echo "something already answers on port $PORT: set REDIS_PORT" >&2; exit 1; fi
redis-server --port "$PORT" --save "" --appendonly no --daemonize yes \
  --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
sleep 0.5; RPID=$(cat "$DIR/redis.pid")
cleanup() { [ -n "${GPID:-}" ] && kill "$GPID" 2>/dev/null || true; [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null || true
  [ -n "${TPID:-}" ] && kill "$TPID" 2>/dev/null || true; kill "$RPID" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

run() { # $1 = ours|theirs ; prints: events cpu_s events_per_cpu_s sim_cpu_s redis_cpu_s
  $R flushdb >/dev/null
  "$OURS" simulate --rate -1 --shards 1 --guilds 10 >"$DIR/sim.out" 2>"$DIR/sim.err" & SPID=$!
  for _ in $(seq 50); do grep -q DISCORD_TOKEN "$DIR/sim.out" 2>/dev/null && break; sleep 0.1; done
  local envs; envs=$(grep -o 'DISCORD_API_PROTOCOL=[^ ]* DISCORD_API_HOST=[^ ]* DISCORD_TOKEN=[^ ]*' "$DIR/sim.out")
  local common="$envs DISCORD_EVENTS=$EVENTS DISCORD_INTENTS=$INTENTS BROKER_TYPE=redis BROKER_GROUP=gateway REDIS_URL=127.0.0.1:$PORT"
  if [ "$1" = ours ]; then
    env $common DISCORD_COMPRESS=zstd-stream LOG_LEVEL=warn "$OURS" gateway >"$DIR/gw.out" 2>"$DIR/gw.err" & GPID=$!
  else
    ( cd "$DIR" && exec env $common "$SG" -config /nonexistent.toml -loglevel warn >"$DIR/gw.out" 2>"$DIR/gw.err" ) & GPID=$!
  fi
  ( while sleep 0.5; do for s in ${EVENTS//,/ }; do $R xtrim "$s" MAXLEN '~' 1000 >/dev/null 2>&1 || true; done; done ) & TPID=$!
  sleep "$WARMUP"
  local c0 e0 s0 r0 c1 e1 s1 r1
  c0=$(cpu $GPID); s0=$(cpu $SPID); r0=$(cpu $RPID); e0=$(added)
  sleep "$SECS"
  c1=$(cpu $GPID); s1=$(cpu $SPID); r1=$(cpu $RPID); e1=$(added)
  kill $GPID $SPID $TPID 2>/dev/null || true; wait $GPID $SPID $TPID 2>/dev/null || true; GPID= SPID= TPID=
  awk -v e=$((e1-e0)) -v c=$((c1-c0)) -v s=$((s1-s0)) -v r=$((r1-r0)) -v t=$TCK -v secs=$SECS \
    'BEGIN{ printf "%d %.2f %.0f %.2f %.2f %.0f\n", e, c/t, (c>0? e/(c/t):0), s/t, r/t, e/secs }'
}

echo "round gateway events cpu_s events_per_cpu_s sim_cpu_s redis_cpu_s events_per_s"
: >"$DIR/ratios"
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) -eq 1 ]; then order="ours theirs"; else order="theirs ours"; fi
  for g in $order; do
    out=$(run $g); echo "$i $g $out"
    eval "${g}_epc=$(echo "$out" | awk '{print $3}')"
  done
  awk -v a="$ours_epc" -v b="$theirs_epc" 'BEGIN{printf "%.3f\n", a/b}' >>"$DIR/ratios"
  echo "$i ratio $(tail -1 "$DIR/ratios")"
done
sort -n "$DIR/ratios" | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2;
  printf "ratio (ours/theirs events per CPU-second) over %d rounds: min %.2f median %.2f max %.2f\n", NR, v[1], m, v[NR]}'
