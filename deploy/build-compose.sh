#!/usr/bin/env bash
# Builds Docker Compose v2 (the `docker compose` CLI plugin; its Go module is
# github.com/docker/compose/v5) at a pinned version from the Go module proxy into the planelink
# cache (once), installs it as a CLI plugin of the current user's Docker configuration
# (${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose) and prints the path of the binary.
# Progress goes to stderr, the path to stdout.
set -euo pipefail

module=github.com/docker/compose/v5
version=v5.6.0
cache_root=${PLANELINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planelink}
out="$cache_root/compose/$version"

if [[ ! -x "$out/docker-compose" ]]; then
  command -v go >/dev/null || { echo "build-compose: Go is required" >&2; exit 1; }
  mkdir -p "$cache_root/compose"
  tmp=$(mktemp -d "$cache_root/compose/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "build-compose: building docker compose $version (first time: several minutes)" >&2
  # `go install module@version` refuses a go.mod with exclude directives (Compose's has some):
  # build inside the downloaded module instead, with its own go.mod and go.sum.
  src=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d "$src" ]] || { echo "build-compose: could not download $module@$version" >&2; exit 1; }
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -ldflags "-s -w -X $module/internal.Version=$version" \
    -o "$tmp/docker-compose" ./cmd)
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
fi

plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
mkdir -p "$plugins"
if [[ "$(readlink "$plugins/docker-compose" 2>/dev/null)" != "$out/docker-compose" ]]; then
  ln -sfn "$out/docker-compose" "$plugins/docker-compose"
fi
echo "$out/docker-compose"
