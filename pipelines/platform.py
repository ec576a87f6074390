"""Names shared by the pipeline, the component image and the Kubernetes manifests.

One place, because three artefacts must agree on them: the compiled pipeline (which
Secret/ConfigMap keys become env vars, which user the pods run as), the Dockerfile (the
numeric ``USER``) and ``k8s/`` (which objects the stack creates). Tests in ``tests/k8s``
check the manifests against the compiled pipeline, not against this file alone.

Nothing secret lives here: only *names* of Kubernetes objects and keys. Values come from
Secrets created on the cluster (see ``k8s/README.md``) and, locally, from the environment.
"""

from __future__ import annotations

import os

#: The one component image (Dockerfile). The tag follows the package version; override
#: at compile/submit time with $COMMIT_IMAGE (e.g. a registry path or a digest).
IMAGE_NAME = "commit-mlops"
IMAGE_TAG = "0.1.0"
DEFAULT_IMAGE = f"{IMAGE_NAME}:{IMAGE_TAG}"


def component_image() -> str:
    """The image components run in: $COMMIT_IMAGE if set, else the pinned default."""
    return os.environ.get("COMMIT_IMAGE", DEFAULT_IMAGE)


#: Numeric non-root user of the image (Dockerfile ``USER``) and of the pipeline pods'
#: security context: Pod Security "restricted" needs runAsNonRoot with a numeric uid.
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001

#: Namespace where Kubeflow Pipelines runs pipeline pods (platform-agnostic install) and
#: where the Secrets/ConfigMap below must exist; our own stack (MLflow, Postgres, S3).
KFP_NAMESPACE = "kubeflow"
STACK_NAMESPACE = "commit-mlops"
#: Service account of pipeline pods (KFP's default runner).
PIPELINE_SERVICE_ACCOUNT = "pipeline-runner"

#: ConfigMap with non-secret endpoints; each key becomes the env var of the same name.
CONFIG_MAP = "commit-mlops-config"
CONFIG_KEYS = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
#: Secret with the S3 credentials; each key becomes the env var of the same name.
S3_SECRET = "commit-s3-credentials"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
#: Secret with MLflow basic-auth credentials (optional: a server without auth needs none).
MLFLOW_SECRET = "commit-mlflow-credentials"
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

#: In-cluster addresses of the stack k8s/ deploys (the ConfigMap's defaults).
MLFLOW_SERVICE_URL = f"http://mlflow.{STACK_NAMESPACE}.svc.cluster.local:5000"
BUCKET = "commit-mlops"
#: Default root for checkpoints on a cluster: durable, so a retried task resumes.
CLUSTER_CHECKPOINT_ROOT = f"s3://{BUCKET}/checkpoints"

#: Kubeflow Trainer v2 runtime our multi-node TrainJobs reference.
TRAINER_API_VERSION = "trainer.kubeflow.org/v1alpha1"
TRAINING_RUNTIME = "commit-torch-distributed"

# --- The stack k8s/ deploys (k8s/base); `commit k8s doctor` checks these objects. ---
#: PostgreSQL credentials of MLflow's backend store (namespace STACK_NAMESPACE only).
POSTGRES_SECRET = "commit-postgres-credentials"
POSTGRES_SECRET_KEYS = ("POSTGRES_USER", "POSTGRES_PASSWORD")
#: Services (name, port) the doctor reaches through the API server's service proxy.
MLFLOW_SERVICE = ("mlflow", 5000)
KFP_API_SERVICE = ("ml-pipeline", 8888)
#: Workloads of the stack: the MLflow Deployment, the Postgres StatefulSet (its PVC is
#: data-postgres-0) and the Job that creates BUCKET.
MLFLOW_DEPLOYMENT = "mlflow"
POSTGRES_STATEFULSET = "postgres"
POSTGRES_PVC = "data-postgres-0"
BUCKET_JOB = "s3-bucket-init"
#: MLflow server image (k8s/mlflow-server/Dockerfile): mlflow + psycopg2 + boto3.
MLFLOW_SERVER_IMAGE = "commit-mlflow-server:3.17.2"
