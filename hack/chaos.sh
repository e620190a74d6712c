#!/usr/bin/env bash
# make chaos: test/chaos at full scale (AGENTRUN_CHAOS=full) on a local fleet
# of its own (hosts chaos-1..3 on 10.205.0.0/16, beside any fleet make up or
# make test started), then the table of figures again at the very end (also
# in .local/chaos.json and .local/chaos.txt). make test runs the same suite's
# short form. CHAOS_FOCUS=REGEXP runs only the scenarios whose names match.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
log_setup chaos
cd "$ROOT"
rm -f .local/chaos.json .local/chaos.txt
focus=()
if [[ -n ${CHAOS_FOCUS:-} ]]; then focus=(-ginkgo.focus "$CHAOS_FOCUS"); fi
start=$SECONDS
rc=0
AGENTRUN_CHAOS=full go test ./test/chaos -count=1 -v -timeout 150m "${focus[@]}" || rc=$?
echo
if [[ -f .local/chaos.txt ]]; then
  step "the figures (.local/chaos.json), in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s:"
  cat .local/chaos.txt
else
  step "the suite wrote no figures (exit $rc)"
fi
exit "$rc"
