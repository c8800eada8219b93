package brokertest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The process a test starts with DieWithTest is killed when the test
// binary dies without running its cleanups: a child test binary starts
// sleep, prints its pid and exits at once (as a panicking test does).
func TestDieWithTest(t *testing.T) {
	if arg := os.Getenv("BROKERTEST_DIE_CHILD"); arg != "" {
		cmd := exec.Command("sleep", arg)
		DieWithTest(cmd)
		if err := cmd.Start(); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("pid", cmd.Process.Pid)
		os.Exit(3) // no cleanup, no Wait
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestDieWithTest$", "-test.count=1")
	// A sleep of its own: a pid reused meanwhile is not taken for it.
	arg := fmt.Sprintf("300.%09d", time.Now().Nanosecond())
	parent.Env = append(os.Environ(), "BROKERTEST_DIE_CHILD="+arg)
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	_ = parent.Wait()
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	if err != nil {
		t.Fatalf("the child printed %q, not a pid", line)
	}
	deadline := time.Now().Add(Wait)
	for alive(pid, arg) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("sleep (pid %d) outlived the test binary that started it", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs with arg on its command line: it exists,
// is that process, and is not a zombie waiting for a parent (in a
// container, the process that inherits it may never reap it).
func alive(pid int, arg string) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	cmdline, err := os.ReadFile(dir + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), arg) {
		return false
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
