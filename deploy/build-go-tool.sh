#!/usr/bin/env bash
# Builds a Go command at a pinned version from the Go module proxy into the planelink cache
# (once) and prints the path of the binary: build-go-tool.sh NAME VERSION PACKAGE, e.g.
# `build-go-tool.sh helm v3.16.4 helm.sh/helm/v3/cmd/helm`. Progress goes to stderr, the path
# to stdout. deploy/build-helm.sh and deploy/build-promtool.sh pin what the tests use.
set -euo pipefail

name=$1 version=$2 package=$3
cache_root=${PLANELINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planelink}
out="$cache_root/$name/$version"

if [[ ! -x "$out/$name" ]]; then
  command -v go >/dev/null || { echo "build-$name: Go is required" >&2; exit 1; }
  mkdir -p "$cache_root/$name"
  tmp=$(mktemp -d "$cache_root/$name/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "build-$name: building $name $version (first time: minutes)" >&2
  CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$tmp" \
    go install -trimpath -ldflags "-s -w" "$package@$version"
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
fi
echo "$out/$name"
