#!/usr/bin/env bash
# Builds a Go command at a pinned version from the Go module proxy into the planelink cache
# (once) and prints the path of the binary: build-go-tool.sh NAME VERSION PACKAGE, e.g.
# `build-go-tool.sh helm v3.16.4 helm.sh/helm/v3/cmd/helm`. Progress goes to stderr, the path
# to stdout. deploy/build-helm.sh, build-promtool.sh and build-compose.sh pin what the tests use.
#
# build-go-tool.sh NAME VERSION PACKAGE MODULE [LDFLAGS] builds inside the downloaded MODULE
# instead (with its own go.mod and go.sum, extra -ldflags LDFLAGS): for a module whose go.mod
# has exclude or replace directives, which `go install PACKAGE@VERSION` refuses.
set -euo pipefail

name=$1 version=$2 package=$3 module=${4:-} ldflags="-s -w ${5:-}"
cache_root=${PLANELINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planelink}
out="$cache_root/$name/$version"

if [[ ! -x "$out/$name" ]]; then
  command -v go >/dev/null || { echo "build-$name: Go is required" >&2; exit 1; }
  mkdir -p "$cache_root/$name"
  tmp=$(mktemp -d "$cache_root/$name/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "build-$name: building $name $version (first time: minutes)" >&2
  if [[ -z "$module" ]]; then
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$tmp" \
      go install -trimpath -ldflags "$ldflags" "$package@$version"
  else
    src=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" \
      | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [[ -d "$src" ]] || { echo "build-$name: could not download $module@$version" >&2; exit 1; }
    (cd "$src" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
      go build -trimpath -ldflags "$ldflags" -o "$tmp/$name" "./${package#"$module"/}")
  fi
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
fi
echo "$out/$name"
