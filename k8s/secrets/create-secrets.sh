#!/usr/bin/env bash
# Create (or update) the stack's Secrets from the environment or from KFP's SeaweedFS secret,
# never from files in the repo. Idempotent; values go through files under a private temp dir,
# not command lines. Templates of what it creates: *.template.yaml beside this script.
#
#   create-secrets.sh [--standalone]
#
# S3 credentials, first match wins:
#   $AWS_ACCESS_KEY_ID + $AWS_SECRET_ACCESS_KEY   (AWS or any external S3)
#   Secret kubeflow/mlpipeline-minio-artifact      (KFP's SeaweedFS; keys accesskey/secretkey)
#   --standalone only: fresh random keys (written into commit-seaweedfs-s3-config too)
# PostgreSQL: kept if commit-mlops/commit-postgres-credentials exists, else a random password.
# MLflow auth (optional): $MLFLOW_TRACKING_USERNAME + $MLFLOW_TRACKING_PASSWORD.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)/common.sh"

STANDALONE=0
for arg in "$@"; do
  case "$arg" in
    --standalone) STANDALONE=1 ;;
    -h | --help)
      sed -n '2,15p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) die "unknown argument '$arg' (expected: --standalone)" ;;
  esac
done

need kubectl "Install kubectl 1.31 or newer."
WORK=$(mktemp -d)
chmod 700 "$WORK"
cleanup() {
  local rc=$?
  rm -rf "$WORK"
  report_failure "$rc"
}
trap cleanup EXIT

random_token() {
  # 32 hex characters from the kernel's CSPRNG.
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

# put_secret NS NAME KEY=FILE...: create or replace a generic Secret from files.
put_secret() {
  local ns=$1 name=$2
  shift 2
  local args=()
  for kv in "$@"; do args+=("--from-file=${kv}"); done
  bounded 60 kubectl create secret generic "$name" -n "$ns" "${args[@]}" \
    --dry-run=client -o yaml >"$WORK/${ns}-${name}.yaml"
  bounded 60 kubectl apply -f "$WORK/${ns}-${name}.yaml" >/dev/null
  printf 'Secret %s/%s: keys %s\n' "$ns" "$name" "$(printf '%s ' "$@" | sed 's/=[^ ]*//g')" >&2
}

namespace_exists() {
  bounded 30 kubectl get namespace "$1" >/dev/null 2>&1
}

step "S3 credentials"
if [ -n "${AWS_ACCESS_KEY_ID:-}" ] && [ -n "${AWS_SECRET_ACCESS_KEY:-}" ]; then
  printf '%s' "$AWS_ACCESS_KEY_ID" >"$WORK/ak"
  printf '%s' "$AWS_SECRET_ACCESS_KEY" >"$WORK/sk"
  echo "from \$AWS_ACCESS_KEY_ID / \$AWS_SECRET_ACCESS_KEY" >&2
elif [ "$STANDALONE" = 0 ] && bounded 30 kubectl get secret -n kubeflow mlpipeline-minio-artifact >/dev/null 2>&1; then
  bounded 30 kubectl get secret -n kubeflow mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d >"$WORK/ak"
  bounded 30 kubectl get secret -n kubeflow mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d >"$WORK/sk"
  if [ ! -s "$WORK/ak" ] || [ ! -s "$WORK/sk" ]; then
    die "kubeflow/mlpipeline-minio-artifact lacks the keys accesskey/secretkey"
  fi
  echo "from KFP's kubeflow/mlpipeline-minio-artifact (SeaweedFS)" >&2
elif [ "$STANDALONE" = 1 ]; then
  random_token >"$WORK/ak"
  random_token >"$WORK/sk"
  echo "fresh random keys for the standalone SeaweedFS" >&2
else
  die "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, install KFP first (its SeaweedFS secret is reused), or pass --standalone"
fi

step "namespace commit-mlops"
if ! namespace_exists commit-mlops; then
  # The overlay owns the namespace (with its Pod Security labels); create just that object.
  bounded 60 kubectl apply -f "${K8S_DIR}/base/namespace.yaml" >/dev/null
fi

step "Secret commit-s3-credentials"
put_secret commit-mlops commit-s3-credentials AWS_ACCESS_KEY_ID="$WORK/ak" AWS_SECRET_ACCESS_KEY="$WORK/sk"
if namespace_exists kubeflow; then
  put_secret kubeflow commit-s3-credentials AWS_ACCESS_KEY_ID="$WORK/ak" AWS_SECRET_ACCESS_KEY="$WORK/sk"
else
  echo "namespace kubeflow absent: pipeline-side Secret skipped (standalone MLflow)" >&2
fi

if [ "$STANDALONE" = 1 ]; then
  step "Secret commit-seaweedfs-s3-config"
  {
    printf '{"identities": [{"name": "commit-mlops", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],' \
      "$(cat "$WORK/ak")" "$(cat "$WORK/sk")"
    printf ' "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n'
  } >"$WORK/s3.json"
  put_secret commit-mlops commit-seaweedfs-s3-config s3.json="$WORK/s3.json"
fi

step "Secret commit-postgres-credentials"
if bounded 30 kubectl get secret -n commit-mlops commit-postgres-credentials >/dev/null 2>&1; then
  echo "exists: kept (the database keeps the password it was initialised with)" >&2
else
  printf 'mlflow' >"$WORK/pu"
  random_token >"$WORK/pp"
  put_secret commit-mlops commit-postgres-credentials POSTGRES_USER="$WORK/pu" POSTGRES_PASSWORD="$WORK/pp"
fi

if [ -n "${MLFLOW_TRACKING_USERNAME:-}" ] && [ -n "${MLFLOW_TRACKING_PASSWORD:-}" ]; then
  step "Secret commit-mlflow-credentials"
  printf '%s' "$MLFLOW_TRACKING_USERNAME" >"$WORK/mu"
  printf '%s' "$MLFLOW_TRACKING_PASSWORD" >"$WORK/mp"
  put_secret kubeflow commit-mlflow-credentials MLFLOW_TRACKING_USERNAME="$WORK/mu" MLFLOW_TRACKING_PASSWORD="$WORK/mp"
fi
