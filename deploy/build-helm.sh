#!/usr/bin/env bash
# Builds Helm at a pinned version from the Go module proxy into the planelink cache (once) and
# prints the path of the binary. Progress goes to stderr, the path to stdout.
set -euo pipefail

version=v3.16.4
cache_root=${PLANELINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planelink}
out="$cache_root/helm/$version"

if [[ ! -x "$out/helm" ]]; then
  command -v go >/dev/null || { echo "build-helm: Go is required" >&2; exit 1; }
  mkdir -p "$cache_root/helm"
  tmp=$(mktemp -d "$cache_root/helm/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "build-helm: building helm $version (first time: about 2 minutes)" >&2
  CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$tmp" \
    go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$version"
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
fi
echo "$out/helm"
