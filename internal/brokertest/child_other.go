//go:build !linux

package brokertest

import "os/exec"

// DieWithTest would make cmd die with the test binary; only Linux has a
// parent-death signal, so elsewhere it does nothing and a test that
// panics may leave cmd running.
func DieWithTest(cmd *exec.Cmd) {}
