#!/usr/bin/env bash
# Builds Helm at a pinned version from the Go module proxy into the planelink cache (once) and
# prints the path of the binary. Progress goes to stderr, the path to stdout.
set -euo pipefail
source "$(dirname "$0")/cached-go-build.sh"

version=v3.16.4

build() {
  echo "build-helm: building helm $version (first time: about 2 minutes)" >&2
  CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$1" \
    go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$version"
}

cached_go_build helm "$version" helm build
echo "$built"
