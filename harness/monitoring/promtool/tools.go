//go:build tools

// Package tools pins promtool, built by harness/monitoring.sh build.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
