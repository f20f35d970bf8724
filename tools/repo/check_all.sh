#!/usr/bin/env bash
# The full gate: what `npm test` and CI run. Every step runs even when an
# earlier one failed, so one run shows every problem; the last line is the
# summary CI reads: `tests: N passed, M failed`, where M counts failed test
# cases plus failed gate steps (fmt, lint, type check, doc lint, publish
# dry-run, version sync).
set -uo pipefail
cd "$(dirname "$0")/../.."
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false
# Nx keeps its cache per machine (~/.nx), not per clone; CI must run every
# test for real, so it skips the cache. Locally a cache hit is a valid result.
nx_cache=()
if [ "${CI:-}" = "true" ]; then nx_cache=(--skip-nx-cache); fi
deno=tools/bin/deno
failed_steps=()
step() {
  local name="$1"; shift
  echo "::: $name"
  if ! "$@"; then failed_steps+=("$name"); echo "::: $name FAILED"; fi
}
$deno --version | head -1
step "version sync"   $deno run -R tools/repo/sync_versions.ts --check
step "fmt"            $deno fmt --check
step "lint"           $deno lint
step "type check"     $deno check
step "chromium"       bash tools/repo/ensure_chromium.sh
rm -rf out/junit && mkdir -p out/junit
step "tests (nx)"     npx nx run-many -t test --parallel=1 --outputStyle=stream "${nx_cache[@]}"
step "doc lint (nx)"  npx nx run-many -t doc-lint --parallel=2 --outputStyle=stream "${nx_cache[@]}"
step "publish dry-run" $deno publish --dry-run --allow-dirty
echo "::: summary"
summary=$($deno run -R tools/repo/ci_summary.ts out/junit)
echo "$summary" | sed '$d'
last=$(echo "$summary" | tail -1)
passed=$(echo "$last" | sed -E 's/tests: ([0-9]+) passed, ([0-9]+) failed/\1/')
failed=$(echo "$last" | sed -E 's/tests: ([0-9]+) passed, ([0-9]+) failed/\2/')
if [ ${#failed_steps[@]} -gt 0 ]; then
  echo "failed gate steps: ${failed_steps[*]}"
fi
failed=$((failed + ${#failed_steps[@]}))
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
