#!/usr/bin/env bash
# CI, the container part: real containers on a Docker engine this script starts itself.
#
#   bash .ci/docker.sh
#
# 1. installs docker.io + debootstrap if missing (a bare CI machine has neither),
# 2. starts a private dockerd (--bridge=none, no iptables: scripts/docker/engine.sh),
# 3. makes the base image locally (debootstrap + docker import: no registry here),
# 4. builds the component image from it with this machine's pip mirrors (make image),
# 5. runs the container tests (tests/docker, pytest marker `docker`): the image's contract,
#    one component in a container, and the whole pipeline through kfp.local.DockerRunner,
# 6. stops the engine and removes its data root, also on failure.
#
# Fails (non-zero) when any step fails, including when no engine can start: the container
# tests are never skipped here. `make test` deselects them (tests/docker/conftest.py) because
# it starts no engine. Stage times are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

declare -a TIMES=()
t_start=$SECONDS
stage() {  # stage NAME COMMAND...: run it, record its wall time
  local name="$1" t0=$SECONDS
  shift
  CURRENT_STAGE="$name"
  echo "==> docker CI: $name"
  "$@"
  TIMES+=("$(printf '%-28s %4d s' "$name" $((SECONDS - t0)))")
}
report() {
  echo "==> docker CI stage times:"
  printf '    %s\n' "${TIMES[@]}"
  printf '    %-28s %4d s\n' "total" $((SECONDS - t_start))
}

install_packages() {
  local missing=() p
  for p in docker.io debootstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  # No service starts at install time: the engine below is the only one, with our flags
  # (a default dockerd would create a bridge, which this network refuses).
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  [ "$made_policy" = 0 ] || $sudo rm -f "$policy"
}

# shellcheck source=../scripts/docker/engine.sh
source scripts/docker/engine.sh
CURRENT_STAGE=""
failed() {  # the EXIT trap: name the stage that failed, so a silent step is not a mystery
  local rc=$1
  [ "$rc" = 0 ] || echo "==> docker CI FAILED in stage '${CURRENT_STAGE:-setup}' (exit $rc)" >&2
}
trap 'rc=$?; failed $rc; docker_engine_stop; report; exit $rc' EXIT

stage "debian packages" install_packages
stage "python venv (make install)" make -s install
stage "engine start" docker_engine_start
stage "base image (debootstrap)" bash scripts/docker/base_image.sh commit-base:bookworm
stage "component image (build)" make -s image BASE_IMAGE=commit-base:bookworm
docker image ls --format '    image {{.Repository}}:{{.Tag}}  {{.Size}}'
stage "container tests" env COMMIT_DOCKER_TESTS=1 .venv/bin/pytest -q -ra -p no:cacheprovider \
  tests/docker
