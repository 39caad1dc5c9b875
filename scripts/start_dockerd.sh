#!/usr/bin/env bash
# Start dockerd in the background if no daemon answers (CI and fresh machines); wait until it does.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd is not installed: apt-get install docker.io" >&2
  exit 1
fi
mkdir -p /var/log
nohup dockerd >/var/log/dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "dockerd is up"
    exit 0
  fi
  sleep 1
done
echo "dockerd did not start; see /var/log/dockerd.log:" >&2
tail -20 /var/log/dockerd.log >&2
exit 1
