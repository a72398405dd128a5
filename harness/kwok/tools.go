//go:build tools

// Package tools pins the commands built by harness/build.sh.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
