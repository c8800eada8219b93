#!/usr/bin/env bash
# side-by-side.sh: the Redis publish -> consume -> ack comparison of issue 13,
# in interleaved rounds against one private Redis server.
#
# Each round runs every program of PROGS once, in this order, each with N
# messages of SIZE bytes:
#   limit      ../shared/bench/redis-limit: plain go-redis, pipelined XADD from
#              4 goroutines, XREADGROUP COUNT 1000, one XACK per read batch
#              pipelined with the next read (the floor to pass)
#   spx        spectacles bench --messages N --size SIZE (64 publishers, one
#              Publish each per message)
#   spx-batch  spectacles bench ... --publishers 4 --batch 256 (as the gateway
#              publishes)
#   spx-c64    spx-batch with --concurrency 64 (handlers per consumer; the
#              default was 64 before 256)
#   discordjs  testdata/interop/bench-discordjs.js: @discordjs/brokers 1.0.0
#              PubSubRedisBroker with its defaults (node)
#   watermill  testdata/bench/watermill: Watermill's Redis Streams driver with
#              its defaults (its own go.mod)
#   base, base-batch  spx and spx-batch built from the git revision BASE_REV
# For every run it records the program's msgs/s (end to end) and its own
# CPU per message, Redis's CPU per message (INFO cpu used_cpu_sys +
# used_cpu_user before and after the run: the whole process lifetime,
# set-up and stream deletion included) and Redis's calls of XADD, XREADGROUP
# and XACK (INFO commandstats after CONFIG RESETSTAT). Then it prints every
# round and a table of min/median/max per program: msgs/s and its ratio to
# limit in the same round, client CPU, Redis CPU, and total CPU (client +
# Redis) per message and its ratio to limit's total in the same round.
#
# Usage (from anywhere in the repository):
#   internal/cli/testdata/bench/side-by-side.sh
#   R=9 N=200000 BASE_REV=main PROGS="limit spx spx-batch base base-batch discordjs watermill" \
#     internal/cli/testdata/bench/side-by-side.sh
# Environment:
#   R=7 rounds; N=100000 messages per run; SIZE=1024 payload bytes;
#   PORT=6390 port of the private redis-server (it fails when the port is
#   taken); PROGS (default "limit spx spx-batch discordjs watermill", plus
#   "base base-batch" when BASE_REV is set); BASE_REV a git revision to build
#   a second spectacles from (git archive, so the checkout is not touched);
#   LIMIT_SRC the redis-limit source directory (default
#   <repo>/../shared/bench/redis-limit); NODE_MODULES a node_modules holding
#   testdata/interop's packages (default: the one the interop tests install
#   into the user cache directory, installed with npm ci when missing);
#   OUT the JSON lines of every run (default ${TMPDIR:-/tmp}/side-by-side-<time>.jsonl);
#   RUN_TIMEOUT=600 seconds one run may take; REDIS_SERVER=redis-server.
# Needs go, redis-server, redis-cli, python3; node and npm for discordjs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
R=${R:-7}
N=${N:-100000}
SIZE=${SIZE:-1024}
PORT=${PORT:-6390}
BASE_REV=${BASE_REV:-}
default_progs="limit spx spx-batch discordjs watermill"
if [[ -n $BASE_REV ]]; then
	default_progs="limit spx spx-batch base base-batch discordjs watermill"
fi
PROGS=${PROGS:-$default_progs}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
OUT=${OUT:-${TMPDIR:-/tmp}/side-by-side-$(date -u +%Y%m%dT%H%M%SZ).jsonl}

say() { printf '%s\n' "$*" >&2; }
die() { say "side-by-side: $*"; exit 1; }

for cmd in go "$REDIS_SERVER" redis-cli python3 timeout; do
	command -v "$cmd" >/dev/null || die "$cmd is not installed"
done
for p in $PROGS; do
	case $p in
	limit | spx | spx-batch | spx-c64 | discordjs | watermill) ;;
	base | base-batch) [[ -n $BASE_REV ]] || die "PROGS has $p but BASE_REV is not set" ;;
	*) die "unknown program $p in PROGS (limit spx spx-batch spx-c64 base base-batch discordjs watermill)" ;;
	esac
done
[[ " $PROGS " == *" discordjs "* ]] && { command -v node >/dev/null || die "node is not installed (needed by discordjs)"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/side-by-side.XXXXXX")
redis_pid=
cleanup() {
	if [[ -n $redis_pid ]]; then
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

has() { [[ " $PROGS " == *" $1 "* ]]; }

rcli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
if rcli ping >/dev/null 2>&1; then
	die "something already answers on 127.0.0.1:$PORT: choose another PORT"
fi

# --- build -------------------------------------------------------------------
say "building spectacles ($(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- 2>/dev/null || echo ', with uncommitted changes'))"
(cd "$repo" && go build -o "$tmp/spectacles" .)

if has base || has base-batch; then
	rev=$(git -C "$repo" rev-parse --verify "$BASE_REV^{commit}") || die "BASE_REV $BASE_REV is not a commit"
	say "building spectacles at $BASE_REV ($(git -C "$repo" rev-parse --short "$rev"))"
	mkdir "$tmp/base-src"
	git -C "$repo" archive "$rev" | tar -x -C "$tmp/base-src"
	(cd "$tmp/base-src" && go build -o "$tmp/spectacles-base" .)
fi

if has limit; then
	if [[ -z ${LIMIT_SRC:-} ]]; then
		for d in "$repo/../shared/bench/redis-limit" "$repo/../../shared/bench/redis-limit"; do
			[[ -f $d/main.go ]] && { LIMIT_SRC=$d; break; }
		done
	fi
	[[ -n ${LIMIT_SRC:-} && -f $LIMIT_SRC/main.go ]] || die "redis-limit source not found: set LIMIT_SRC"
	say "building redis-limit from $LIMIT_SRC"
	# The source directory may be read-only: build a copy.
	mkdir "$tmp/limit-src"
	cp "$LIMIT_SRC"/go.mod "$LIMIT_SRC"/go.sum "$LIMIT_SRC"/*.go "$tmp/limit-src/"
	chmod -R u+w "$tmp/limit-src"
	(cd "$tmp/limit-src" && go build -o "$tmp/redis-limit" .)
fi

if has watermill; then
	say "building the watermill program"
	(cd "$here/watermill" && go build -o "$tmp/watermill-bench" .)
fi

if has discordjs; then
	interop="$repo/internal/cli/testdata/interop"
	if [[ -z ${NODE_MODULES:-} ]]; then
		# The directory the interop tests (internal/cli/interop_test.go) install
		# into: the user cache dir, keyed by package.json and package-lock.json.
		key=$(cat "$interop/package.json" "$interop/package-lock.json" | sha256sum | cut -c1-16)
		base="${XDG_CACHE_HOME:-$HOME/.cache}/spectacles-interop"
		NODE_MODULES="$base/$key/node_modules"
		if [[ ! -e $base/$key/installed ]]; then
			command -v npm >/dev/null || die "npm is not installed (needed by discordjs)"
			say "installing the npm packages of $interop (npm ci)"
			mkdir -p "$base"
			inst=$(mktemp -d "$base/install-XXXXXX")
			cp "$interop/package.json" "$interop/package-lock.json" "$inst/"
			(cd "$inst" && npm ci --no-audit --no-fund >&2)
			touch "$inst/installed"
			mv -T "$inst" "$base/$key" 2>/dev/null || rm -rf "$inst" # another run installed it first
		fi
	fi
	[[ -d $NODE_MODULES/@discordjs/brokers ]] || die "no @discordjs/brokers in $NODE_MODULES"
fi

# --- private redis -----------------------------------------------------------
"$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
	--dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
redis_pid=$!
for _ in $(seq 100); do
	rcli ping >/dev/null 2>&1 && break
	kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited: $(tail -5 "$tmp/redis.log")"
	sleep 0.05
done
rcli ping >/dev/null 2>&1 || die "redis-server does not answer on port $PORT"
url="redis://127.0.0.1:$PORT/0"
say "redis $(rcli info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p') on $url (pid $redis_pid); $R rounds of N=$N SIZE=$SIZE: $PROGS"

redis_cpu() { rcli info cpu | tr -d '\r' | awk -F: '$1=="used_cpu_sys"||$1=="used_cpu_user"{s+=$2} END{printf "%.6f", s}'; }

# set_cmd PROG sets the array cmd to the command line of one run of PROG.
set_cmd() {
	local spx=(env BROKER_TYPE=redis REDIS_URL="$url")
	case $1 in
	limit) cmd=("$tmp/redis-limit" -n "$N" -size "$SIZE" -url "$url") ;;
	spx) cmd=("${spx[@]}" "$tmp/spectacles" bench --messages "$N" --size "$SIZE") ;;
	spx-batch) cmd=("${spx[@]}" "$tmp/spectacles" bench --messages "$N" --size "$SIZE" --publishers 4 --batch 256) ;;
	spx-c64) cmd=("${spx[@]}" "$tmp/spectacles" bench --messages "$N" --size "$SIZE" --publishers 4 --batch 256 --concurrency 64) ;;
	base) cmd=("${spx[@]}" "$tmp/spectacles-base" bench --messages "$N" --size "$SIZE") ;;
	base-batch) cmd=("${spx[@]}" "$tmp/spectacles-base" bench --messages "$N" --size "$SIZE" --publishers 4 --batch 256) ;;
	discordjs) cmd=(env NODE_PATH="$NODE_MODULES" node "$repo/internal/cli/testdata/interop/bench-discordjs.js" "$url" -n "$N" -size "$SIZE") ;;
	watermill) cmd=("$tmp/watermill-bench" -n "$N" -size "$SIZE" -url "$url") ;;
	esac
}

: >"$OUT"
for round in $(seq "$R"); do
	for p in $PROGS; do
		set_cmd "$p"
		rcli config resetstat >/dev/null
		cpu0=$(redis_cpu)
		if ! timeout "$RUN_TIMEOUT" "${cmd[@]}" >"$tmp/out" 2>"$tmp/err"; then
			say "round $round $p failed:"
			tail -20 "$tmp/err" >&2
			die "run failed: ${cmd[*]}"
		fi
		cpu1=$(redis_cpu)
		rcli info commandstats | tr -d '\r' >"$tmp/stats"
		line=$(grep '^{' "$tmp/out" | tail -1) || die "round $round $p printed no JSON line: $(cat "$tmp/out" "$tmp/err")"
		python3 - "$round" "$p" "$N" "$cpu0" "$cpu1" "$tmp/stats" "$line" >>"$OUT" <<-'EOF'
			import json, sys
			rnd, prog, n, cpu0, cpu1, stats, line = sys.argv[1:]
			n = int(n)
			raw = json.loads(line)
			calls = {}
			for l in open(stats):
			    if l.startswith("cmdstat_"):
			        name, _, rest = l[len("cmdstat_"):].partition(":")
			        fields = dict(kv.split("=", 1) for kv in rest.split(","))
			        calls[name] = int(fields["calls"])
			client = raw.get("client_cpu_us_per_msg", raw.get("cpu_us_per_msg"))
			print(json.dumps({
			    "round": int(rnd), "prog": prog, "n": n,
			    "msgs_per_s": raw.get("end_to_end_per_s"),
			    "publish_per_s": raw.get("publish_per_s"),
			    "client_cpu_us_per_msg": client,
			    "redis_cpu_us_per_msg": (float(cpu1) - float(cpu0)) * 1e6 / n,
			    "xadd": calls.get("xadd", 0), "xreadgroup": calls.get("xreadgroup", 0), "xack": calls.get("xack", 0),
			    "raw": raw,
			}))
		EOF
		say "round $round $p: $(tail -1 "$OUT" | python3 -c 'import json,sys; r=json.load(sys.stdin); c=r["client_cpu_us_per_msg"]; print("%.0f msgs/s, client %s us/msg, redis %.2f us/msg, XREADGROUP %d, XACK %d" % (r["msgs_per_s"], "-" if c is None else "%.1f" % c, r["redis_cpu_us_per_msg"], r["xreadgroup"], r["xack"]))')"
	done
done

# --- report ------------------------------------------------------------------
python3 - "$OUT" "$PROGS" <<'EOF'
import json, statistics, sys
path, progs = sys.argv[1], sys.argv[2].split()
runs = [json.loads(l) for l in open(path)]
limit = {r["round"]: r for r in runs if r["prog"] == "limit"}

def total(r):
    c = r["client_cpu_us_per_msg"]
    return None if c is None else c + r["redis_cpu_us_per_msg"]

def figures(r):
    l = limit.get(r["round"])
    t, lt = total(r), (total(l) if l else None)
    per100k = 100000 / r["n"]
    return {
        "msgs/s": r["msgs_per_s"],
        "x limit": r["msgs_per_s"] / l["msgs_per_s"] if l else None,
        "client us/msg": r["client_cpu_us_per_msg"],
        "redis us/msg": r["redis_cpu_us_per_msg"],
        "total us/msg": t,
        "total x limit": t / lt if t is not None and lt else None,
        "XREADGROUP/100k": r["xreadgroup"] * per100k,
        "XACK/100k": r["xack"] * per100k,
    }

def fmt(v, key):
    if v is None:
        return "-"
    if key == "msgs/s" or key.endswith("/100k"):
        return f"{v:,.0f}"
    if "x limit" in key:
        return f"{v:.2f}"
    return f"{v:.1f}"

cols = ["msgs/s", "x limit", "client us/msg", "redis us/msg", "total us/msg", "total x limit", "XREADGROUP/100k", "XACK/100k"]
n = runs[0]["n"] if runs else 0
rounds = sorted({r["round"] for r in runs})
print(f"\n### Rounds (N={n}; raw results: {path})\n")
print("| round | program | " + " | ".join(cols) + " |")
print("|---|---|" + "---:|" * len(cols))
for r in runs:
    f = figures(r)
    print(f"| {r['round']} | {r['prog']} | " + " | ".join(fmt(f[c], c) for c in cols) + " |")

print(f"\n### min / median / max over {len(rounds)} rounds\n")
print("| program | " + " | ".join(cols) + " |")
print("|---|" + "---:|" * len(cols))
for p in progs:
    fs = [figures(r) for r in runs if r["prog"] == p]
    cells = []
    for c in cols:
        vs = [f[c] for f in fs if f[c] is not None]
        cells.append("-" if not vs else " / ".join(fmt(v, c) for v in (min(vs), statistics.median(vs), max(vs))))
    print(f"| {p} | " + " | ".join(cells) + " |")
print("\nx limit: msgs/s over redis-limit's in the same round; total: client + Redis CPU per message; "
      "total x limit: over redis-limit's total in the same round.")
EOF
