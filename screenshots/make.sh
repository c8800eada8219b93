#!/usr/bin/env bash
# Re-creates the console screenshots in this directory.
#
# It builds spectacles, runs `spectacles console` in demo mode (embedded
# broker, built-in Discord simulator, simulated bot: nothing configured) in a
# private tmux server at 120x36, drives it with send-keys, captures each
# screen with `tmux capture-pane -e -p` (ANSI) and renders it to PNG with
# charmbracelet/freeze v0.2.2, built as a tool in a throwaway module (the
# module proxy refuses a plain `go install ...@v0.2.2`).
#
#   screenshots/make.sh            # all PNGs into screenshots/
#   FREEZE=/path/to/freeze screenshots/make.sh
#   ONLY=amqp screenshots/make.sh  # the RabbitMQ screenshot alone
#
# The last step, 17-amqp-groups.png, runs only when RabbitMQ answers at
# AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/) with its management
# API: amqpfixture (next to this script) sets up a worker holding messages
# unacked and two dead letters on an exchange of its own, which it deletes
# when it ends.
#
# Needs go, tmux (installed with apt-get when missing), optionally pngquant
# (shrinks the PNGs tenfold), and the module proxy
# for freeze's first build. Keeps the .ansi captures next to the PNGs only
# with KEEP_ANSI=1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d)
sock="spectacles-shots-$$"
cols=120
rows=36

cleanup() {
	tmux -L "$sock" kill-server 2>/dev/null || true
	if [[ -n "${fixture:-}" ]]; then
		kill -TERM "$fixture" 2>/dev/null || true
		wait "$fixture" 2>/dev/null || true
		"$work/amqpfixture" -cleanup "$exchange" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

if ! command -v tmux >/dev/null; then
	apt-get update -qq && apt-get install -y -qq tmux >/dev/null
fi

freeze=${FREEZE:-}
if [[ -z "$freeze" ]]; then
	cache="${XDG_CACHE_HOME:-$HOME/.cache}/spectacles-freeze"
	freeze="$cache/freeze"
	if [[ ! -x "$freeze" ]]; then
		mkdir -p "$cache"
		(cd "$cache" && { [[ -f go.mod ]] || go mod init x >/dev/null 2>&1; } &&
			go get -tool github.com/charmbracelet/freeze@v0.2.2 >/dev/null 2>&1 &&
			go build -o freeze github.com/charmbracelet/freeze)
	fi
fi

(cd "$root" && go build -o "$work/spectacles" .)

# start NAME 'ARGS': a console in its own tmux session (ARGS as one
# shell-quoted string).
start() {
	local name=$1 args=$2
	tmux -L "$sock" new-session -d -s "$name" -x "$cols" -y "$rows" \
		"env -u REDIS_URL -u DISCORD_TOKEN -u NO_COLOR -u SPECTACLES_THEME TERM=xterm-256color COLORTERM=truecolor \
		BROKER_MESSAGE_TIMEOUT=5s $work/spectacles console $args 2>$work/$name.err"
}

# keys SESSION KEY...: tmux key names (Enter, Escape, Down, C-s) or text.
keys() {
	local s=$1
	shift
	for k in "$@"; do
		tmux -L "$sock" send-keys -t "$s" "$k"
		sleep 0.15
	done
}

# say SESSION TEXT: types text literally.
say() {
	tmux -L "$sock" send-keys -t "$1" -l "$2"
	sleep 0.2
}

# palette SESSION COMMAND: runs a ":" command.
palette() {
	keys "$1" ":"
	say "$1" "$2"
	keys "$1" Enter
}

# shot SESSION NAME [WAIT] [light]: captures the screen and renders
# NAME.png, on a light background for the light theme.
shot() {
	local s=$1 name=$2 bg=("--background" "#15171c")
	sleep "${3:-0.6}"
	if [[ "${4:-}" == light ]]; then bg=("--background" "#fafafa" "--theme" "github"); fi
	tmux -L "$sock" capture-pane -e -p -t "$s" >"$work/$name.ansi"
	"$freeze" --language ansi --window --padding 20 --margin 0 --font.size 14 \
		"${bg[@]}" -o "$here/$name.png" "$work/$name.ansi" >/dev/null
	if command -v pngquant >/dev/null 2>&1; then
		# A terminal has few colours: a palette PNG is a tenth of the size.
		pngquant --quality 60-90 --speed 1 --force --output "$here/$name.png" "$here/$name.png"
	fi
	if [[ "${KEEP_ANSI:-}" == 1 ]]; then cp "$work/$name.ansi" "$here/$name.ansi"; fi
	echo "screenshots/$name.png"
}

if [[ "${ONLY:-}" != amqp ]]; then
start demo "--sim-rate 12"
sleep 22 # shards identify, the simulated bot leaves entries pending, worker-2 stops (15 s) and goes stale (5 s)

shot demo 01-overview
keys demo 2
shot demo 02-streams 1.5
palette demo "groups MESSAGE_CREATE"
shot demo 03-groups 1.5
palette demo "pending MESSAGE_CREATE sim-bot"
sleep 1.5
keys demo Space Space
shot demo 04-pending
keys demo Enter
shot demo 05-payload 1
keys demo Escape
sleep 0.4
keys demo c Enter
shot demo 06-claim-confirm
keys demo n
# Bulk recovery: every entry the stuck worker-2 holds, to the live consumer.
keys demo /
say demo "consumer=worker-2"
keys demo Enter
sleep 1
keys demo B c
sleep 0.8
keys demo Enter
shot demo 18-bulk-confirm
keys demo y
shot demo 19-bulk-claimed 1.5
keys demo / Escape
palette demo "tail MESSAGE_CREATE,TYPING_START,MESSAGE_REACTION_ADD"
shot demo 07-tail 3
# A simulated guild, from the payload shown earlier.
guild=$(grep -o '"guild_id": "[0-9]*"' "$work/05-payload.ansi" | head -1 | grep -o '[0-9]\{6,\}' || true)
guild=${guild:-81384788765712384}
keys demo 6
say demo "MESSAGE_CREATE"
keys demo Tab Tab # Event → Timeout → Data
say demo '{"content": "hello from the console", "channel_id": "1"}'
keys demo C-s
sleep 0.5
keys demo y # groups consume MESSAGE_CREATE: the console asks
shot demo 08-publish 1
keys demo Escape
sleep 0.3
keys demo 7
say demo "$guild"
shot demo 09-send 1
keys demo C-s
sleep 0.5
keys demo y
shot demo 10-send-done 1
keys demo Escape
sleep 0.3
keys demo 8
shot demo 11-shards 2.5
keys demo 9
shot demo 20-services 2
palette demo "dlq MESSAGE_CREATE"
shot demo 12-dead-letters 2
palette demo "pending MESSAGE_CREATE sim-bot"
sleep 1
keys demo "?"
shot demo 13-help
keys demo q
tmux -L "$sock" resize-window -t demo -x 70 -y 16 2>/dev/null || true
shot demo 14-too-small 1

start light "--theme light --read-only --view 'pending MESSAGE_CREATE sim-bot' --sim-rate 12"
sleep 10
shot light 15-light-read-only 0.6 light
start hc "--theme high-contrast --view streams --sim-rate 12"
sleep 6
shot hc 16-high-contrast
fi

# RabbitMQ (optional): the Groups view of an exchange with a worker holding
# unacknowledged messages.
amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
amqp_hostport=$(sed -E 's|^amqps?://([^@/]*@)?([^/?]*).*|\2|' <<<"$amqp_url")
if timeout 3 bash -c "exec 3<>/dev/tcp/${amqp_hostport%:*}/${amqp_hostport##*:}" 2>/dev/null; then
	exchange="spectacles-shots-$$"
	(cd "$root" && go build -o "$work/amqpfixture" ./screenshots/amqpfixture)
	AMQP_URL="$amqp_url" "$work/amqpfixture" "$exchange" >"$work/fixture.out" 2>"$work/fixture.err" &
	fixture=$!
	for _ in $(seq 50); do grep -q ready "$work/fixture.out" 2>/dev/null && break; sleep 0.2; done
	tmux -L "$sock" new-session -d -s amqp -x "$cols" -y "$rows" \
		"env -u REDIS_URL -u DISCORD_TOKEN -u NO_COLOR -u SPECTACLES_THEME TERM=xterm-256color COLORTERM=truecolor \
		BROKER_TYPE=amqp AMQP_URL='$amqp_url' BROKER_GROUP='$exchange' \
		$work/spectacles console --view 'groups MESSAGE_CREATE' 2>$work/amqp.err"
	sleep 7 # RabbitMQ's statistics refresh every 5 s
	shot amqp 17-amqp-groups 0.5
	tmux -L "$sock" kill-session -t amqp 2>/dev/null || true
	kill -TERM "$fixture" 2>/dev/null || true
	wait "$fixture" 2>/dev/null || true
	fixture=
else
	echo "no RabbitMQ at ${amqp_hostport}: skipping 17-amqp-groups.png" >&2
fi
