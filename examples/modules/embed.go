// Package modules embeds example callback modules, so that `coordinatord
// dev` can load them with nothing on disk. The modules' sources, and the
// script that rebuilds them, are in the directories beside this file.
package modules

import _ "embed"

// CReporter is c-reporter/c-reporter.wasm: a reporter (job results) that
// emits each event as a record to sink "results".
//
//go:embed c-reporter/c-reporter.wasm
var CReporter []byte

// GoCorrelation is go-correlation/go-correlation.wasm: holds leases only
// when at least two datacenters fail, and says so in its notes.
//
//go:embed go-correlation/go-correlation.wasm
var GoCorrelation []byte
