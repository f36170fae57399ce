#!/usr/bin/env bash
# Builds promtool (Prometheus' rule checker) at a pinned version from the Go module proxy into
# the planelink cache (once; the first build takes several minutes) and prints the path of the
# binary. The monitoring tests run `promtool check rules` and `promtool test rules` with it.
set -euo pipefail
exec bash "$(dirname "$0")/build-go-tool.sh" promtool v0.316.0 \
  github.com/prometheus/prometheus/cmd/promtool
