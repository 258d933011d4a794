#!/usr/bin/env bash
# Calibration on a small host: one core (taskset -c 0), one verification
# thread, no GPU (MONTANA_DISABLE_BACKENDS=gpu when this build has a gpu
# backend). Runs a full and a --quick calibration for the Montana network,
# checks each verdict follows from its measured rates (recomputed here with
# awk, independently of the binary), and prints wall times, peak memory and
# the measurements as Markdown for docs/BENCHMARKS.md.
#
# Usage: scripts/small-host.sh [extra montana calibrate flags, e.g. --d 1000]
# Exit 0 when every verdict is consistent, 1 when one is not.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/time ]; then
  echo "small-host: installing time (for peak memory)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time >/dev/null
fi

cargo build --release -p montana-node >&2
montana="${CARGO_TARGET_DIR:-target}/release/montana"

if "$montana" backends --json | grep -q '"name":"gpu"'; then
  export MONTANA_DISABLE_BACKENDS=gpu
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# field NAME FILE: a top-level scalar of the one-line JSON report.
field() { grep -o "\"$1\":[^,}]*" "$2" | head -1 | cut -d: -f2- | tr -d '"'; }

# Recomputes can_evaluate, margin, can_follow and role from D, the window
# and the two chosen rates, with the rules of calibration/src/verdict.rs.
check_verdict() {
  local json=$1
  awk -v d="$(field d "$json")" -v w="$(field window_secs "$json")" \
      -v er="$(field eval_hashes_per_sec "$json")" -v vr="$(field verify_hashes_per_sec "$json")" \
      -v role="$(field role "$json")" -v ce="$(field can_evaluate "$json")" \
      -v cf="$(field can_follow "$json")" -v margin="$(field margin "$json")" '
    BEGIN {
      e = d / er; v = d / vr; m = 1 - e / w
      cev = (e <= w) ? "true" : "false"
      cfv = (v <= 0.25 * w * (1 + 1e-9)) ? "true" : "false"
      if (cfv == "false") r = "cannot-follow"
      else if (cev == "false") r = "follower"
      else if (m >= 0.15 - 1e-9) r = "proposer-capable"
      else r = "candidate-capable"
      dm = m - margin; if (dm < 0) dm = -dm
      ok = (r == role && cev == ce && cfv == cf && dm < 1e-9)
      printf "verdict check: window eval %.3f s, window verify %.3f s of %g s, margin %.4f -> %s, %s: %s\n",
        e, v, w, m, r, (cfv == "true" ? "can follow" : "cannot follow"), (ok ? "consistent" : "INCONSISTENT (binary said " role ")")
      exit(ok ? 0 : 1)
    }'
}

# run LABEL FLAGS...: one calibration on core 0, timed.
run() {
  local label=$1; shift
  /usr/bin/time -v -o "$tmp/$label.time" \
    taskset -c 0 "$montana" calibrate --threads 1 --json --allow-slow \
    --out "$tmp/$label.toml" "$@" >"$tmp/$label.json"
  wall=$(grep "Elapsed (wall clock)" "$tmp/$label.time" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$tmp/$label.time" | awk '{print $NF}')
  echo "$label|$wall|$((rss / 1024))" >>"$tmp/summary"
}

# measurements FILE: one Markdown row per backend.
measurements() {
  sed 's/{"backend":/\n{"backend":/g' "$1" | grep '^{"backend":' | while read -r m; do
    name=$(echo "$m" | grep -o '"backend":"[^"]*"' | cut -d'"' -f4)
    er=$(echo "$m" | grep -o '"eval":{"hashes_per_sec":[^,}]*' | cut -d: -f3 || true)
    vr=$(echo "$m" | grep -o '"verify":{"hashes_per_sec":[^,}]*' | cut -d: -f3 || true)
    note=$(echo "$m" | grep -o '"note":"[^"]*"' | cut -d'"' -f4 || true)
    awk -v n="$name" -v er="$er" -v vr="$vr" -v note="$note" 'BEGIN {
      printf "| %s | %s | %s | %s |\n", n,
        (er == "" ? "-" : sprintf("%.2f M", er / 1e6)),
        (vr == "" ? "-" : sprintf("%.2f M", vr / 1e6)), note }'
  done
}

run full "$@"
run quick --quick "$@"

cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || uname -m)
mega() { awk -v r="$1" 'BEGIN { printf "%.2f M", r / 1e6 }'; }
echo "### Small host: one core (taskset -c 0), --threads 1, no GPU"
echo
echo "CPU: $cpu; $(nproc --all) logical CPUs on the machine, 1 used. $("$montana" --version)."
echo "Network: $(field hash "$tmp/full.json"), D = $(field d "$tmp/full.json"), K = $(field checkpoints "$tmp/full.json"), window $(field window_secs "$tmp/full.json") s."
echo
echo "| run | wall time | peak RSS (MiB) | role | eval backend | eval steps/s | verify backend | verify steps/s (1 thread) |"
echo "|---|---|---|---|---|---|---|---|"
while IFS='|' read -r label wall rss; do
  j="$tmp/$label.json"
  echo "| $label | $wall | $rss | $(field role "$j") | $(field eval_backend "$j") | $(mega "$(field eval_hashes_per_sec "$j")") | $(field verify_backend "$j") | $(mega "$(field verify_hashes_per_sec "$j")") |"
done <"$tmp/summary"
status=0
for label in full quick; do
  echo
  if line=$(check_verdict "$tmp/$label.json"); then echo "$label: $line"; else echo "$label: $line"; status=1; fi
  echo
  echo "| backend | eval steps/s (pinned) | verify steps/s (1 thread) | note |"
  echo "|---|---|---|---|"
  measurements "$tmp/$label.json"
done
exit $status
