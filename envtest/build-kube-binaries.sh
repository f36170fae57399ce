#!/usr/bin/env bash
# Builds kube-apiserver and etcd at the versions pinned in kubebin/go.mod beside this script, from the Go
# module proxy, into a cache keyed by that go.mod/go.sum; prints the directory holding them.
# A second run with the same pins costs nothing. Progress goes to stderr, the path to stdout.
#
#   envtest/build-kube-binaries.sh            # build (or reuse) and print the bin dir
#   PLANELINK_CACHE=/some/dir envtest/...     # cache root (default: ~/.cache/planelink)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mod="$here/kubebin"
cache_root=${PLANELINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planelink}

kube_version=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$mod/go.mod")
# Comments are left out of the key: editing them must not cost a rebuild.
key=$(grep -v '^//' "$mod/go.mod" | cat - "$mod/go.sum" | sha256sum | cut -c1-16)
out="$cache_root/kube/$kube_version-$key"

if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build-kube-binaries: Go is required (https://go.dev/doc/install)" >&2; exit 1; }

mkdir -p "$cache_root/kube"
tmp=$(mktemp -d "$cache_root/kube/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

major=${kube_version#v}; major=${major%%.*}
minor=${kube_version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

cd "$mod"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"  # go.sum pins every module
echo "build-kube-binaries: building etcd and kube-apiserver $kube_version (first time: about 4 minutes on 2 cores)" >&2
start=$SECONDS
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
echo "build-kube-binaries: etcd built after $((SECONDS - start)) s" >&2
go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "build-kube-binaries: kube-apiserver built after $((SECONDS - start)) s" >&2

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
