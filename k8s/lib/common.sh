# shellcheck shell=bash
# Shared by the kind/minikube scripts: named steps, deadlines, and a failure report that
# says which step failed. Sourced, never run. Every call that can block runs under a timeout
# that is at most what is left of the script's overall deadline ($DEADLINE_SECONDS).

set -euo pipefail

K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "${K8S_DIR}/.." && pwd)"
export K8S_DIR REPO_DIR

: "${DEADLINE_SECONDS:=2400}"
DEADLINE_AT=$(($(date +%s) + DEADLINE_SECONDS))
STEP="start"

report_failure() {
  local rc=$1
  if [ "$rc" -ne 0 ]; then
    printf '\nFAILED in step "%s" (exit %s). Fix the cause above, then re-run: every step is idempotent.\n' \
      "$STEP" "$rc" >&2
  fi
}
_on_exit() { report_failure $?; }
trap _on_exit EXIT

step() {
  STEP="$*"
  printf '\n==> %s\n' "$*" >&2
}

die() {
  printf 'ERROR [%s]: %s\n' "$STEP" "$*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH. $2"
}

# Seconds left before the overall deadline (at least 1, so a command still gets a chance
# to report instead of "timeout 0" meaning "no timeout").
remaining() {
  local left=$((DEADLINE_AT - $(date +%s)))
  [ "$left" -gt 0 ] || die "overall deadline of ${DEADLINE_SECONDS}s passed (raise DEADLINE_SECONDS)"
  echo "$left"
}

# bounded SECONDS CMD...: run CMD with at most SECONDS (and never past the deadline).
bounded() {
  local limit=$1
  shift
  local left
  left=$(remaining)
  [ "$limit" -le "$left" ] || limit=$left
  local rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    die "timed out after ${limit}s: $*"
  fi
  return "$rc"
}

# Print what is wrong with the pods of a namespace (not ready, waiting reasons, events).
diagnose_namespace() {
  local ns=$1
  printf -- '--- pods in %s\n' "$ns" >&2
  timeout 30 kubectl get pods -n "$ns" -o wide >&2 || true
  printf -- '--- waiting containers in %s (reason: message)\n' "$ns" >&2
  timeout 30 kubectl get pods -n "$ns" -o \
    jsonpath='{range .items[*]}{.metadata.name}{range .status.initContainerStatuses[*]}{" "}{.name}{"="}{.state.waiting.reason}{": "}{.state.waiting.message}{end}{range .status.containerStatuses[*]}{" "}{.name}{"="}{.state.waiting.reason}{": "}{.state.waiting.message}{end}{"\n"}{end}' >&2 || true
  printf -- '--- PVCs in %s\n' "$ns" >&2
  timeout 30 kubectl get pvc -n "$ns" >&2 || true
  printf -- '--- recent warning events in %s\n' "$ns" >&2
  timeout 30 kubectl get events -n "$ns" --field-selector type=Warning \
    --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
}

# wait_rollout NS KIND/NAME SECONDS: wait for a Deployment/StatefulSet; on failure say why.
wait_rollout() {
  local ns=$1 obj=$2 secs=$3
  if ! bounded "$((secs + 15))" kubectl rollout status -n "$ns" "$obj" --timeout="${secs}s"; then
    diagnose_namespace "$ns"
    die "$obj in namespace $ns did not become ready within ${secs}s (see the pods and events above)"
  fi
}
