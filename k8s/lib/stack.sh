# shellcheck shell=bash
# The cluster-independent half of the up scripts: install pinned KFP and Trainer, create the
# Secrets, apply an overlay and wait for it. Sourced after common.sh.

# Pinned versions (docs: k8s/README.md). env/platform-agnostic is the install whose images
# are all pinned at the tag (env/dev pulls :master images even at a release tag).
: "${KFP_VERSION:=2.17.0}"
: "${TRAINER_VERSION:=v2.3.0}"
KFP_MANIFESTS="github.com/kubeflow/pipelines/manifests/kustomize"
TRAINER_MANIFESTS="https://github.com/kubeflow/trainer.git/manifests/overlays/manager"
STACK_NS=commit-mlops
KFP_NS=kubeflow

install_kfp() {
  step "install Kubeflow Pipelines ${KFP_VERSION} (env/platform-agnostic)"
  bounded 300 kubectl apply -k "${KFP_MANIFESTS}/cluster-scoped-resources?ref=${KFP_VERSION}"
  bounded 90 kubectl wait --for condition=established --timeout=60s crd/applications.app.k8s.io
  bounded 300 kubectl apply -k "${KFP_MANIFESTS}/env/platform-agnostic?ref=${KFP_VERSION}"
  step "wait for Kubeflow Pipelines (all Deployments in ${KFP_NS} available)"
  if ! bounded 1230 kubectl wait -n "$KFP_NS" --for=condition=Available deployment --all --timeout=1200s; then
    diagnose_namespace "$KFP_NS"
    die "Kubeflow Pipelines did not become available (see the pods above; on small machines give the node more memory)"
  fi
}

install_trainer() {
  step "install Kubeflow Trainer ${TRAINER_VERSION}"
  bounded 300 kubectl apply --server-side -k "${TRAINER_MANIFESTS}?ref=${TRAINER_VERSION}"
  bounded 120 kubectl wait --for condition=established --timeout=90s \
    crd/clustertrainingruntimes.trainer.kubeflow.org crd/trainjobs.trainer.kubeflow.org
  if ! bounded 630 kubectl wait -n kubeflow-system --for=condition=Available deployment --all --timeout=600s; then
    diagnose_namespace kubeflow-system
    die "the Trainer controller did not become available"
  fi
}

build_images() {
  step "build the images (commit-mlops:0.1.0 from ./Dockerfile, commit-mlflow-server:3.17.2)"
  need docker "Install Docker, or set SKIP_BUILD=1 and load prebuilt images yourself."
  [ -f "${REPO_DIR}/Dockerfile" ] || die "no Dockerfile at ${REPO_DIR}"
  bounded 1800 docker build -t commit-mlops:0.1.0 "$REPO_DIR"
  bounded 1200 docker build -t commit-mlflow-server:3.17.2 "${K8S_DIR}/mlflow-server"
}

create_secrets() {
  step "create the Secrets (templates in k8s/secrets; nothing secret in the repo)"
  bounded 180 "${K8S_DIR}/secrets/create-secrets.sh"
}

# apply_stack OVERLAY_DIR
apply_stack() {
  local overlay=$1
  step "apply overlay ${overlay#"${REPO_DIR}"/}"
  # A Job's pod template is immutable: drop the finished one so the apply can recreate it.
  bounded 60 kubectl delete job -n "$STACK_NS" s3-bucket-init --ignore-not-found --wait=true
  bounded 180 kubectl apply -k "$overlay"
}

wait_stack() {
  step "wait for PostgreSQL"
  wait_rollout "$STACK_NS" statefulset/postgres 300
  step "wait for the MLflow server"
  wait_rollout "$STACK_NS" deployment/mlflow 420
  step "wait for the bucket Job (s3-bucket-init)"
  if ! bounded 330 kubectl wait -n "$STACK_NS" --for=condition=complete job/s3-bucket-init --timeout=300s; then
    timeout 30 kubectl logs -n "$STACK_NS" job/s3-bucket-init --tail=20 >&2 || true
    diagnose_namespace "$STACK_NS"
    die "the bucket was not created: check the S3 endpoint in ConfigMap commit-mlops-config and Secret commit-s3-credentials"
  fi
}

run_doctor() {
  step "commit k8s doctor"
  local commit_bin="${REPO_DIR}/.venv/bin/commit"
  if [ -x "$commit_bin" ]; then
    bounded 180 "$commit_bin" k8s doctor --timeout 120
  else
    printf 'skipped: %s not found (run "make install" to get the doctor)\n' "$commit_bin" >&2
  fi
}

print_addresses() {
  cat >&2 <<MSG

The stack is up. UIs (each command blocks; run it in its own terminal):
  KFP UI      kubectl port-forward -n ${KFP_NS} svc/ml-pipeline-ui 8080:80     -> http://localhost:8080
  KFP API     kubectl port-forward -n ${KFP_NS} svc/ml-pipeline 8888:8888      -> commit pipeline submit --host http://localhost:8888
  MLflow UI   kubectl port-forward -n ${STACK_NS} svc/mlflow 5000:5000         -> http://localhost:5000
MSG
}

# Kubeflow Trainer v2.3 needs Kubernetes >= 1.31.
check_server_version() {
  step "check the Kubernetes server version (>= 1.31)"
  local raw minor
  raw=$(bounded 30 kubectl get --raw /version) || die "the API server does not answer (is the cluster running?)"
  minor=$(printf '%s' "$raw" | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p')
  [ -n "$minor" ] || die "cannot read the server version from: $raw"
  [ "$minor" -ge 31 ] || die "Kubernetes 1.${minor} is too old: Kubeflow Trainer ${TRAINER_VERSION} needs 1.31 or newer"
}
