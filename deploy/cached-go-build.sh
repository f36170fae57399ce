# Sourced by deploy/build-*.sh: builds a Go program once into the planelink cache.
#
#   cached_go_build TOOL VERSION BINARY BUILD_FUNCTION
#
# When $cache_root/TOOL/VERSION/BINARY is missing, calls BUILD_FUNCTION with a fresh folder
# (under the cache, so the final move is a rename) that it must leave BINARY in, then moves the
# folder into place; a failed build leaves nothing behind. Sets `built` to the binary's path.
# The cache root is $PLANELINK_CACHE, else $XDG_CACHE_HOME/planelink, else ~/.cache/planelink.

cache_root=${PLANELINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planelink}

cached_go_build() {
  local tool=$1 version=$2 binary=$3 build=$4
  local out="$cache_root/$tool/$version"
  if [[ ! -x "$out/$binary" ]]; then
    command -v go >/dev/null || { echo "build-$tool: Go is required" >&2; exit 1; }
    mkdir -p "$cache_root/$tool"
    _cached_go_build_tmp=$(mktemp -d "$cache_root/$tool/.build.XXXXXX")
    trap 'rm -rf "$_cached_go_build_tmp"' EXIT
    "$build" "$_cached_go_build_tmp"
    [[ -x "$_cached_go_build_tmp/$binary" ]] || { echo "build-$tool: no $binary built" >&2; exit 1; }
    rm -rf "$out"
    mv "$_cached_go_build_tmp" "$out"
    trap - EXIT
  fi
  built="$out/$binary"
}
