#!/usr/bin/env bash
# Renders the pinned HTML reports (src/report/snapshots/*_html.snap) to the PNGs the README
# shows, with headless Chromium (apt install chromium fonts-noto-color-emoji).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for outcome in resolved:1395 failed:1630; do
  name=${outcome%%:*} height=${outcome##*:}
  # An insta snapshot is a front matter between two `---` lines, then the value.
  awk '/^---$/{n++; next} n>=2' "src/report/snapshots/selfheal__report__tests__${name}_html.snap" > "$work/$name.html"
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="760,$height" \
    --screenshot="docs/report-$name.png" "file://$work/$name.html"
done
