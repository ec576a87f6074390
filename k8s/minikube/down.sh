#!/usr/bin/env bash
# Delete the minikube profile made by up.sh. MINIKUBE_PROFILE as for up.sh.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"

: "${MINIKUBE_PROFILE:=commit-mlops}"
: "${DEADLINE_SECONDS:=300}"
step "check tools"
need minikube "Install minikube."
step "delete minikube profile ${MINIKUBE_PROFILE}"
bounded 240 minikube delete -p "$MINIKUBE_PROFILE"
