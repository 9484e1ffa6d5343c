#!/usr/bin/env bash
# A real Redis (the Debian redis-server package) on loopback, for tests and CI.
#   scripts/redis.sh start [--dir DIR] [--port 6379]   install if missing, start, wait for PING
#   scripts/redis.sh stop  [--dir DIR]
set -euo pipefail
cmd=${1:-help}; shift || true
dir="$(cd "$(dirname "$0")/.." && pwd)/.lookback/redis"
port=6379
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

ensure_installed() {
  command -v redis-server >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "redis-server is not installed; run: sudo apt-get install -y redis-server" >&2
    exit 1
  fi
  echo "installing redis-server (Debian package)" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
}

case "$cmd" in
  start)
    ensure_installed
    mkdir -p "$dir"
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
      echo "redis already running on 127.0.0.1:$(cat "$dir/redis.port")"; exit 0
    fi
    echo "$port" > "$dir/redis.port"
    # Durable like production: append-only file, fsync every second.
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --appendonly yes \
      --appendfsync everysec --save "" --protected-mode yes
    for _ in $(seq 1 100); do
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        echo "redis ready on 127.0.0.1:$port (pid $(cat "$dir/redis.pid"))"; exit 0
      fi
      sleep 0.1
    done
    echo "redis did not answer on port $port" >&2; tail -20 "$dir/redis.log" >&2 || true; exit 1 ;;
  stop)
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
      pid=$(cat "$dir/redis.pid"); kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$dir/redis.pid"; echo "redis stopped" ;;
  *) sed -n '2,5p' "$0"; exit 0 ;;
esac
