#!/usr/bin/env bash
# Builds Docker Compose v2 (the `docker compose` CLI plugin; its Go module is
# github.com/docker/compose/v5, the current major version of that line) at a pinned version from
# the Go module proxy into the planelink cache (once), installs it as a CLI plugin of the
# current user (${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose, a symbolic link) and
# prints the path of the binary. Progress goes to stderr, the path to stdout.
set -euo pipefail

module=github.com/docker/compose/v5
version=v5.6.0
# Compose's go.mod excludes modules, so it is built inside its module.
built=$(bash "$(dirname "$0")/build-go-tool.sh" docker-compose "$version" "$module/cmd" \
  "$module" "-X $module/internal.Version=$version")

plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
mkdir -p "$plugins"
if [[ "$(readlink "$plugins/docker-compose" 2>/dev/null)" != "$built" ]]; then
  ln -sfn "$built" "$plugins/docker-compose"
fi
echo "$built"
