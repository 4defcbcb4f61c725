//go:build !wasip1

package abi

import (
	"fmt"
	"os"
)

// Off wasip1 there is no host: Output and Fail do nothing, and Log writes to
// standard error, so that a module's code can run in ordinary Go tests.

// Output does nothing off wasip1.
func Output([]byte) {}

// Fail does nothing off wasip1.
func Fail(string) {}

var levelNames = [...]string{"DEBUG", "INFO", "WARN", "ERROR"}

// Log writes the line to standard error off wasip1.
func Log(level int32, msg string) {
	name := "LEVEL" + fmt.Sprint(level)
	if level >= 0 && int(level) < len(levelNames) {
		name = levelNames[level]
	}
	fmt.Fprintf(os.Stderr, "%s %s\n", name, msg)
}

func bufferAddress() uint32 { return 0 }
