#!/usr/bin/env bash
# The same as ../kind/up.sh on minikube: a profile with Calico (minikube's default CNI does not
# enforce NetworkPolicies), pinned KFP 2.17.0 and Trainer v2.3.0, the images built and loaded,
# Secrets, overlays/kind (the small-resources overlay fits both), readiness, the doctor.
#
# Environment (defaults): MINIKUBE_PROFILE=commit-mlops KUBERNETES_VERSION=v1.33.1
#   MINIKUBE_CPUS=4 MINIKUBE_MEMORY=12g SKIP_BUILD=0 DEADLINE_SECONDS=2400
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"
# shellcheck source=../lib/stack.sh
source "${K8S_DIR}/lib/stack.sh"

: "${MINIKUBE_PROFILE:=commit-mlops}"
: "${KUBERNETES_VERSION:=v1.33.1}"
: "${MINIKUBE_CPUS:=4}"
: "${MINIKUBE_MEMORY:=12g}"
: "${SKIP_BUILD:=0}"

step "check tools"
need minikube "Install minikube 1.34 or newer."
need kubectl "Install kubectl 1.31 or newer."
need timeout "Install GNU coreutils."

step "start minikube profile ${MINIKUBE_PROFILE} (Kubernetes ${KUBERNETES_VERSION})"
bounded 900 minikube start -p "$MINIKUBE_PROFILE" --kubernetes-version="$KUBERNETES_VERSION" \
  --cpus="$MINIKUBE_CPUS" --memory="$MINIKUBE_MEMORY" --cni=calico --wait=all --wait-timeout=10m0s
bounded 30 kubectl config use-context "$MINIKUBE_PROFILE" >/dev/null
check_server_version

install_kfp
install_trainer

if [ "$SKIP_BUILD" != 1 ]; then
  build_images
fi
step "load the images into minikube"
bounded 900 minikube -p "$MINIKUBE_PROFILE" image load commit-mlops:0.1.0
bounded 900 minikube -p "$MINIKUBE_PROFILE" image load commit-mlflow-server:3.17.2

create_secrets
apply_stack "${K8S_DIR}/overlays/kind"
wait_stack
run_doctor
print_addresses
