# shellcheck shell=bash
# A private Docker engine for CI and local checks (source this file, then call the functions).
#
#   source scripts/docker/engine.sh
#   docker_engine_start            # exports DOCKER_HOST; the engine lives in $COMMIT_DOCKER_DIR
#   ...docker build / docker run --network host|none ...
#   docker_engine_stop             # also registered by the caller's trap
#
# Why its own dockerd instead of the machine's: CI machines start bare, and on these machines
# containers must not get a bridge network (traffic to private address ranges is refused), so
# the engine runs with --bridge=none and no iptables rules; containers use --network host or
# --network none. Data root, exec root, pid file and socket are private, so nothing of the
# host's Docker set-up (if any) is touched, and stopping it removes everything it made.

docker_engine_start() {
  COMMIT_DOCKER_DIR="${COMMIT_DOCKER_DIR:-$(mktemp -d /tmp/commit-docker.XXXXXX)}"
  mkdir -p "$COMMIT_DOCKER_DIR"
  local dir="$COMMIT_DOCKER_DIR"
  if ! command -v dockerd >/dev/null; then
    echo "docker engine: dockerd is not installed (apt-get install docker.io)" >&2
    return 1
  fi
  # setsid: the engine and its containerd child form their own process group, so stopping
  # it never signals the caller.
  setsid dockerd \
    --bridge=none --iptables=false --ip6tables=false \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
    --host "unix://$dir/docker.sock" >"$dir/dockerd.log" 2>&1 &
  COMMIT_DOCKERD_PID=$!
  export DOCKER_HOST="unix://$dir/docker.sock" COMMIT_DOCKER_DIR COMMIT_DOCKERD_PID
  local i
  for i in $(seq 1 120); do
    if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      echo "docker engine: dockerd $(docker version --format '{{.Server.Version}}') up at $DOCKER_HOST (${i}x0.5 s)"
      return 0
    fi
    if ! kill -0 "$COMMIT_DOCKERD_PID" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  echo "docker engine: dockerd did not come up; last lines of $dir/dockerd.log:" >&2
  tail -n 30 "$dir/dockerd.log" >&2 || true
  return 1
}

docker_engine_stop() {
  [ -n "${COMMIT_DOCKERD_PID:-}" ] || return 0
  if kill -0 "$COMMIT_DOCKERD_PID" 2>/dev/null; then
    # Containers first (a running one keeps dockerd waiting), then the engine.
    docker ps -q 2>/dev/null | xargs -r docker kill >/dev/null 2>&1 || true
    kill -TERM "$COMMIT_DOCKERD_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 60); do
      kill -0 "$COMMIT_DOCKERD_PID" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$COMMIT_DOCKERD_PID" 2>/dev/null || true
  fi
  echo "docker engine: stopped (pid $COMMIT_DOCKERD_PID)"
  COMMIT_DOCKERD_PID=""
  if [ "${COMMIT_DOCKER_KEEP:-0}" != 1 ] && [ -n "${COMMIT_DOCKER_DIR:-}" ]; then
    # What dockerd left mounted under its dirs (the netns of the host network, overlays after a
    # hard kill), deepest first; then the dirs can go.
    awk -v d="$COMMIT_DOCKER_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    rm -rf "$COMMIT_DOCKER_DIR"
  fi
}
