#!/usr/bin/env bash
# Builds Helm at a pinned version from the Go module proxy into the planelink cache (once) and
# prints the path of the binary. Progress goes to stderr, the path to stdout.
set -euo pipefail
exec bash "$(dirname "$0")/build-go-tool.sh" helm v3.16.4 helm.sh/helm/v3/cmd/helm
