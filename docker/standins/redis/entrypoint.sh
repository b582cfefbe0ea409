#!/bin/sh
# As the official image: redis-server runs as the redis user in /data, as PID 1.
set -eu
if [ "${1:-}" = redis-server ]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
