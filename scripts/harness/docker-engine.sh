#!/usr/bin/env bash
# Make sure a docker engine answers; install and start one when none does.
#   docker-engine.sh start   -> engine up (installs Debian's docker.io if needed)
#   docker-engine.sh stop    -> stops the engine only if this harness started it
set -euo pipefail
source "$(dirname "$0")/lib.sh"

marker="$DHOPS_CACHE/dockerd.pid"   # exists only when we started dockerd
mkdir -p "$DHOPS_CACHE"

start() {
  if docker info >/dev/null 2>&1; then
    log "docker engine answers, using it"
    return
  fi
  if ! command -v dockerd >/dev/null; then
    log "installing docker.io from Debian"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; } \
      || die "could not install docker.io"
  fi
  log "starting dockerd (log: $DHOPS_CACHE/dockerd.log)"
  nohup dockerd >"$DHOPS_CACHE/dockerd.log" 2>&1 &
  echo $! >"$marker"
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && { log "dockerd up (pid $(cat "$marker"))"; return; }
    kill -0 "$(cat "$marker")" 2>/dev/null || break
    sleep 1
  done
  tail -20 "$DHOPS_CACHE/dockerd.log" >&2
  die "dockerd did not come up"
}

stop() {
  [ -f "$marker" ] || { log "dockerd not started by the harness, left running"; return; }
  pid="$(cat "$marker")"
  rm -f "$marker"
  kill -0 "$pid" 2>/dev/null || return 0
  log "stopping dockerd (pid $pid)"
  kill "$pid"
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
