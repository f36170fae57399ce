#!/usr/bin/env bash
# Builds Docker Compose v2 (the `docker compose` CLI plugin; its Go module is
# github.com/docker/compose/v5, the current major version of that line) at a pinned version from
# the Go module proxy into the planelink cache (once), installs it as a CLI plugin of the
# current user (${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose, a symbolic link) and
# prints the path of the binary. Progress goes to stderr, the path to stdout.
set -euo pipefail
source "$(dirname "$0")/cached-go-build.sh"

module=github.com/docker/compose/v5
version=v5.6.0

build() {
  echo "build-compose: building docker compose $version (first time: about 4 minutes)" >&2
  # `go install module@version` refuses a go.mod with exclude directives (Compose's has some):
  # build inside the downloaded module instead, with its own go.mod and go.sum.
  local src
  src=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d "$src" ]] || { echo "build-compose: could not download $module@$version" >&2; exit 1; }
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -ldflags "-s -w -X $module/internal.Version=$version" \
    -o "$1/docker-compose" ./cmd)
}

cached_go_build compose "$version" docker-compose build

plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
mkdir -p "$plugins"
if [[ "$(readlink "$plugins/docker-compose" 2>/dev/null)" != "$built" ]]; then
  ln -sfn "$built" "$plugins/docker-compose"
fi
echo "$built"
