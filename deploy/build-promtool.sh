#!/usr/bin/env bash
# Builds promtool (Prometheus' rule checker) at a pinned version from the Go module proxy into the
# planelink cache (once) and prints the path of the binary. Progress goes to stderr, the path to
# stdout. The monitoring tests run `promtool check rules` and `promtool test rules` with it.
set -euo pipefail

version=v0.316.0
cache_root=${PLANELINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planelink}
out="$cache_root/promtool/$version"

if [[ ! -x "$out/promtool" ]]; then
  command -v go >/dev/null || { echo "build-promtool: Go is required" >&2; exit 1; }
  mkdir -p "$cache_root/promtool"
  tmp=$(mktemp -d "$cache_root/promtool/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "build-promtool: building promtool $version (first time: several minutes)" >&2
  CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$tmp" \
    go install -trimpath -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@$version"
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
fi
echo "$out/promtool"
