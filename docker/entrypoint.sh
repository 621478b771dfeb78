#!/bin/sh
# wingmark container entry point: `docker run IMAGE [COMMAND ARGS...]` runs `wingmark COMMAND ARGS...`
# (default command: serve). In NVIDIA's images their own entry point goes first: it checks the driver and
# sets up CUDA forward compatibility, then runs ours.
set -eu

if [ "$#" -eq 0 ]; then
    set -- serve
fi

if [ -x /opt/nvidia/nvidia_entrypoint.sh ] && [ -z "${WINGMARK_SKIP_NVIDIA_ENTRYPOINT:-}" ]; then
    exec /opt/nvidia/nvidia_entrypoint.sh wingmark "$@"
fi
exec wingmark "$@"
