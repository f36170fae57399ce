//go:build tools

// Package tools pins the main package this module exists to build.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
)
