//go:build tools

// Package tools pins the Prometheus server and promtool, both built by
// harness/monitoring.sh build from this one module.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
