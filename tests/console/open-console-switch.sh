#!/bin/bash
# Runs the real message-switch with a headless Chromium showing its console for as long as
# the switch runs, to measure what an open console costs the switch (docs/operations.md,
# "What an open console costs"):
#
#   cargo build --release --bins
#   target/release/message-switch-bench --only floor,rpc --storage memory \
#       --switch tests/console/open-console-switch.sh
#
# and the same without `--switch`, side by side. The switch is exec'ed, so the bench's
# CPU and memory figures (read from /proc/PID) are the switch's alone; the browser runs in
# its own process group and is killed when the switch's stderr closes.
set -u
here=$(cd "$(dirname "$0")" && pwd)
switch=${CONSOLE_SWITCH:-$here/../../target/release/message-switch}
chromium=${CONSOLE_CHROMIUM:-/usr/bin/chromium}

watch() {
  local browser="" profile=""
  while IFS= read -r line; do
    printf '%s\n' "$line" >&2
    case $line in
      "listening on tcp "*)
        profile=$(mktemp -d)
        setsid "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
          --disable-background-networking --user-data-dir="$profile" \
          --remote-debugging-port=0 "http://${line#listening on tcp }/admin" \
          >/dev/null 2>&1 &
        browser=$!
        ;;
    esac
  done
  if [ -n "$browser" ]; then
    kill -- "-$browser" 2>/dev/null
    wait "$browser" 2>/dev/null
    rm -rf "$profile"
  fi
}

exec "$switch" "$@" 2> >(watch)
