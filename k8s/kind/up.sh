#!/usr/bin/env bash
# From nothing to the full stack on kind: cluster, pinned KFP 2.17.0 and Trainer v2.3.0, the
# two images built and loaded, Secrets, overlays/kind, readiness, then `commit k8s doctor`.
# Idempotent: re-running reuses the cluster and re-applies everything. Every step has a
# deadline; on failure it names the step and exits non-zero.
#
# Environment (defaults): CLUSTER_NAME=commit-mlops KIND_NODE_IMAGE=kindest/node:v1.33.1
#   SKIP_BUILD=0 (1: the images are already in the local Docker) DEADLINE_SECONDS=2400
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"
# shellcheck source=../lib/stack.sh
source "${K8S_DIR}/lib/stack.sh"

: "${CLUSTER_NAME:=commit-mlops}"
: "${KIND_NODE_IMAGE:=kindest/node:v1.33.1}"
: "${SKIP_BUILD:=0}"

step "check tools"
need kind "Install kind 0.24 or newer (https://kind.sigs.k8s.io)."
need kubectl "Install kubectl 1.31 or newer."
need docker "kind runs its node in Docker."
need timeout "Install GNU coreutils."

step "create kind cluster ${CLUSTER_NAME} (${KIND_NODE_IMAGE})"
if bounded 60 kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  echo "cluster exists: reused" >&2
else
  bounded 600 kind create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config "${K8S_DIR}/kind/cluster.yaml" --wait 300s
fi
bounded 30 kubectl config use-context "kind-${CLUSTER_NAME}" >/dev/null
check_server_version

install_kfp
install_trainer

if [ "$SKIP_BUILD" != 1 ]; then
  build_images
fi
step "load the images into the kind node"
bounded 900 kind load docker-image --name "$CLUSTER_NAME" commit-mlops:0.1.0 commit-mlflow-server:3.17.2

create_secrets
apply_stack "${K8S_DIR}/overlays/kind"
wait_stack
run_doctor
print_addresses
