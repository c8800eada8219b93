package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// conventionsBinary builds the command once per test that needs the binary.
func conventionsBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	return buildSpectacles(t)
}

// scriptPath returns the path of script(1), which runs a command on a
// pseudo-terminal; outside CI its absence skips the test.
func scriptPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("script")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("script(1) is needed to run the command on a terminal: %v", err)
		}
		t.Skipf("script(1) is not installed: %v", err)
	}
	return p
}

// TestNoTerminalQueryOutsideConsole runs commands on a pseudo-terminal that
// answers nothing (as script(1) gives): no command but the console may ask
// the terminal anything (bubbletea's init asked for the background colour
// with OSC 11, then waited 5 s for an answer that never came).
func TestNoTerminalQueryOutsideConsole(t *testing.T) {
	bin := conventionsBinary(t)
	script := scriptPath(t)
	for _, args := range []string{"--help", "version", "streams --help", "publish --help"} {
		t.Run(args, func(t *testing.T) {
			// A bound on a hang (the query waited 5 s), not a speed measure.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, script, "-qec", bin+" "+args, "/dev/null")
			cmd.Env = append(os.Environ(), "TERM=xterm-256color", "REDIS_URL="+testRedisURL)
			cmd.Env = append(cmd.Env, "CI=") // termenv asks nothing when CI is set
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("%s: %v after %s\n%q", args, err, took, out.String())
			}
			for _, query := range []string{"\x1b]11;?", "\x1b]10;?", "\x1b[6n", "\x1b[c"} {
				if strings.Contains(out.String(), query) {
					t.Errorf("%s wrote the terminal query %q (and waited %s for its answer)", args, query, took)
				}
			}
			if !strings.Contains(out.String(), "spectacles") {
				t.Errorf("%s printed no help or version: %q", args, out.String())
			}
		})
	}
}

// TestUsageErrorsExit2 runs wrong arguments, unknown commands, bad flags and
// values that a default would silently replace: each is a usage error,
// exit code 2, one line naming the problem and the usage.
func TestUsageErrorsExit2(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"groups"}, "(usage: spectacles groups STREAM"},
		{[]string{"pending", "X"}, "(usage: spectacles pending STREAM GROUP"},
		{[]string{"ack", "X", "G"}, "(usage: spectacles ack STREAM GROUP ID..."},
		{[]string{"dlq", "lst", "X"}, `unknown command "lst" for "spectacles dlq" (did you mean "list"?)`},
		{[]string{"dlq", "list"}, "(usage: spectacles dlq list EVENT"},
		{[]string{"streams", "extra"}, `unknown command "extra" for "spectacles streams" (usage: spectacles streams`},
		{[]string{"stremas"}, `unknown command "stremas" for "spectacles" (did you mean "streams"?)`},
		{[]string{"streams", "--bogus"}, "unknown flag: --bogus (usage: spectacles streams [flags]"},
		{[]string{"bench", "--messages", "abc"}, `invalid argument "abc" for "--messages"`},
		{[]string{"bench", "--messages", "0"}, "--messages must be at least 1, got 0"},
		{[]string{"bench", "--consumers", "0"}, "--consumers must be at least 1, got 0"},
		{[]string{"bench", "--publishers", "-1"}, "--publishers must be at least 1, got -1"},
		{[]string{"bench", "--stall-timeout", "0s"}, "--stall-timeout must be positive"},
		{[]string{"simulate", "--shards", "0"}, "--shards must be at least 1, got 0"},
		{[]string{"simulate", "--max-concurrency", "0"}, "--max-concurrency must be at least 1"},
		{[]string{"simulate", "--heartbeat-interval", "0s"}, "--heartbeat-interval must be positive"},
		{[]string{"console", "--refresh", "0s"}, "--refresh must be positive, got 0s"},
		{[]string{"--refresh", "0s"}, "--refresh must be positive, got 0s"},
		{[]string{"console", "--view=bogus"}, `--view: "bogus" is not a view`},
		{[]string{"console", "--sim-shards", "0"}, "--sim-shards must be at least 1"},
		{[]string{"console", "--theme", "bogus"}, "bogus"},
		{[]string{"version", "extra"}, "(usage: spectacles version"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a bound on a hang
			defer cancel()
			r := invocation{}.run(ctx, c.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
			}
			wantOneErrorLine(t, r, c.want)
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

// TestVersion: version and --version print one line with the module
// version and commit (devel and unknown when the build recorded none), and
// need no configuration.
func TestVersion(t *testing.T) {
	env := map[string]string{"BROKER_TYPE": "bogus", "LOG_LEVEL": "loud"}
	var lines []string
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := invocation{env: env}.run(t.Context(), args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
		if !regexp.MustCompile(`^spectacles \S+ \(commit \S+.*; go1\.\S+ \S+/\S+\)\n$`).MatchString(r.stdout) {
			t.Errorf("%v printed %q", args, r.stdout)
		}
		lines = append(lines, r.stdout)
	}
	if lines[0] != lines[1] {
		t.Errorf("version %q and --version %q differ", lines[0], lines[1])
	}
	if got := versionText(); !strings.Contains(lines[0], got) {
		t.Errorf("printed %q, versionText %q", lines[0], got)
	}
}

// TestCompletion: spectacles completion SHELL prints a completion script.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "__start_spectacles", "zsh": "#compdef spectacles", "fish": "complete -c spectacles",
	} {
		r := invocation{env: map[string]string{"BROKER_TYPE": "bogus"}}.run(t.Context(), "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: exit %d, stderr %q, script has no %q", shell, r.code, r.stderr, want)
		}
	}
	r := cli(t, "completion", "tcsh")
	if r.code != exitUsage {
		t.Errorf("completion tcsh: exit %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
	}
	// Completion of command names works through cobra's __complete.
	r = cli(t, "__complete", "str")
	if r.code != 0 || !strings.Contains(r.stdout, "streams") {
		t.Errorf("__complete str: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestHelpGroupsAndExamples: the root help lists the commands in groups,
// and every command's help has an example.
func TestHelpGroupsAndExamples(t *testing.T) {
	r := cli(t, "--help")
	if r.code != 0 {
		t.Fatalf("--help: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, g := range commandGroups() {
		i := strings.Index(r.stdout, "\n"+g.title+"\n")
		if i < 0 {
			t.Errorf("help has no group %q:\n%s", g.title, r.stdout)
			continue
		}
		section, _, _ := strings.Cut(r.stdout[i+len(g.title)+2:], "\n\n")
		for _, name := range g.commands {
			if name == "respond" {
				continue // another branch adds it
			}
			if !regexp.MustCompile(`(?m)^  ` + name + ` `).MatchString(section) {
				t.Errorf("group %q does not list %s:\n%s", g.title, name, section)
			}
		}
	}
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, env: mapLookup(nil)}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" {
			t.Errorf("%s has no example", c.CommandPath())
		}
		if c.Name() == "completion" {
			return // cobra's bash, zsh, fish, powershell
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.rootCommand())
	r = cli(t, "groups", "--help")
	if !strings.Contains(r.stdout, "Examples:\n  spectacles groups MESSAGE_CREATE") {
		t.Errorf("groups --help has no example:\n%s", r.stdout)
	}
}

// TestCallInterruptedExits130 interrupts a call waiting for its reply:
// the process exits 130 (128 + SIGINT) and says so once, naming the call
// once.
func TestCallInterruptedExits130(t *testing.T) {
	bin := conventionsBinary(t)
	event := unique("cli-interrupt")
	rc := redisClient(t, event)
	// A group that never answers, so that the call waits (with no group at
	// all it would fail at once: nobody could ever read it).
	if err := rc.XGroupCreateMkStream(t.Context(), event, "mute", "$").Err(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "call", event, `{"wait":true}`, "--timeout", "60s")
	cmd.Env = append(os.Environ(), "REDIS_URL="+testRedisURL)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The request is on the stream once the call waits for its reply.
	deadline := time.Now().Add(20 * time.Second)
	for rc.XLen(t.Context(), event).Val() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the call published nothing in 20s; stderr %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		t.Fatalf("call did not exit within 20s of SIGINT; stderr %q", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d, want 130", code)
	}
	got := stderr.String()
	want := "spectacles: call " + event + ": interrupted (SIGINT)\n"
	if got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// TestAMQPInspectionDeclaresNothing: streams and groups on RabbitMQ only
// look: the exchange of the group they run as (a fresh name here) does not
// exist afterwards.
func TestAMQPInspectionDeclaresNothing(t *testing.T) {
	url := amqptest.URL(t)
	group := unique("cli-look")
	deleteAMQP(t, url, group) // in case the bug comes back
	env := map[string]string{"BROKER_TYPE": "amqp", "AMQP_URL": url, "BROKER_GROUP": group}
	for _, args := range [][]string{{"streams"}, {"streams", "--json"}, {"groups", unique("EVENT")}} {
		r := invocation{env: env}.run(t.Context(), args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	err = ch.ExchangeDeclarePassive(group, amqp091.ExchangeDirect, true, false, false, false, nil)
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.NotFound {
		t.Errorf("after streams and groups, exchange %q: passive declare = %v, want NOT_FOUND (inspection declared it)", group, err)
	}
}

// TestCLIActionsNameTheCLI: dead letters moved and messages claimed from
// the command line name the CLI (spectacles-cli@HOST), not the console and
// not BROKER_CLIENT (a worker's name, when run in its environment).
func TestCLIActionsNameTheCLI(t *testing.T) {
	c, ev, group, ids := pendingSetup(t, 2)
	redisClient(t, core.DeadLetterEvent(ev))
	want := "spectacles-cli@" + core.DefaultClient()
	inv := invocation{env: map[string]string{"BROKER_CLIENT": "worker-1"}}
	if r := inv.run(t.Context(), "dlq", "move", ev, group, ids[0], "--reason", "by hand"); r.code != 0 {
		t.Fatalf("dlq move: exit %d, stderr %q", r.code, r.stderr)
	}
	dead, err := c.XRange(t.Context(), core.DeadLetterEvent(ev), "-", "+").Result()
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead letters %v, %v", dead, err)
	}
	if got := dead[0].Values[core.HeaderClient]; got != want {
		t.Errorf("dead letter client header = %v, want %q", got, want)
	}
	r := inv.run(t.Context(), "claim", ev, group, ids[1], "--json")
	if r.code != 0 {
		t.Fatalf("claim: exit %d, stderr %q", r.code, r.stderr)
	}
	ps, err := c.XPendingExt(t.Context(), &goredis.XPendingExtArgs{Stream: ev, Group: group, Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(ps) != 1 {
		t.Fatalf("pending %v, %v", ps, err)
	}
	if ps[0].Consumer != want {
		t.Errorf("claimed to %q, want %q", ps[0].Consumer, want)
	}
	if !strings.Contains(r.stdout, want) {
		t.Errorf("claim printed %q, want the consumer %q", r.stdout, want)
	}
}

// TestErrorsSayItOnce: an error names its command, event and server once:
// the command line no longer repeats what the driver's error says.
func TestErrorsSayItOnce(t *testing.T) {
	key := unique("cli-wrongtype")
	rc := redisClient(t, key)
	if err := rc.Set(t.Context(), key, "not a stream", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "publish", key, `{}`)
	if r.code != exitError {
		t.Errorf("publish to a string key: exit %d, want %d", r.code, exitError)
	}
	wantOneErrorLine(t, r, "WRONGTYPE")
	if n := strings.Count(r.stderr, "publish "+key); n != 1 {
		t.Errorf("stderr %q says %q %d times, want once", r.stderr, "publish "+key, n)
	}

	// rediss:// to the (plaintext) test server: says what to change, at once.
	addr := testRedisURL
	if _, rest, ok := strings.Cut(addr, "://"); ok {
		addr = rest
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	r = invocation{env: map[string]string{"REDIS_URL": "rediss://" + addr}}.run(ctx, "streams")
	took := time.Since(start)
	if r.code != exitError {
		t.Errorf("rediss:// to plaintext: exit %d, want %d", r.code, exitError)
	}
	wantOneErrorLine(t, r, "TLS handshake with "+addr+" failed: the server does not speak TLS (use redis:// instead of rediss://)")
	if n := strings.Count(r.stderr, addr); n != 1 {
		t.Errorf("stderr %q names %s %d times, want once", r.stderr, addr, n)
	}
	if took > 15*time.Second { // a bound on a hang (it took 25 s), not a speed measure
		t.Errorf("rediss:// to plaintext took %s to fail", took)
	}
}

// A call that nobody can ever read (no group consumes its event) fails at
// once with the reason, instead of waiting for its timeout.
func TestCallNobodyConsumesFailsFast(t *testing.T) {
	event := unique("cli-unhandled")
	redisClient(t, event)
	r := cli(t, "call", event, `{"n":1}`, "--timeout", "10m")
	if r.code != 1 {
		t.Errorf("exit %d, want 1; stderr %q", r.code, r.stderr)
	}
	wantOneErrorLine(t, r, "no consumer group reads its stream")
}
