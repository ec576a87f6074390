#!/usr/bin/env bash
# Delete the kind cluster made by up.sh (with everything in it). CLUSTER_NAME as for up.sh.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"

: "${CLUSTER_NAME:=commit-mlops}"
: "${DEADLINE_SECONDS:=300}"
step "check tools"
need kind "Install kind 0.24 or newer."
step "delete kind cluster ${CLUSTER_NAME}"
bounded 240 kind delete cluster --name "$CLUSTER_NAME"
