package brokertest

import (
	"os/exec"
	"syscall"
)

// DieWithTest makes cmd, a server process a test starts, receive SIGKILL
// when the test binary dies (Linux's parent-death signal), so that a test
// that panics or is killed leaves no server behind; t.Cleanup alone runs
// only when the test ends normally. Call it before cmd.Start.
func DieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
