package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/bench"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/themes"
	"github.com/spectacles-go/spectacles/tui"
)

// cliClient is the client name the inspection commands act as: the
// consumer claim gives messages to by default and the client header of the
// dead letters dlq move writes. Not BROKER_CLIENT, which in a worker's
// environment names that worker, nor the console's name.
func cliClient() string { return "spectacles-cli@" + core.DefaultClient() }

// exitSignal is the exit code base of a command ended by a signal: 128 + the
// signal's number, as shells report it (130 for SIGINT, 143 for SIGTERM).
const exitSignal = 128

// signalError is the cause of a context cancelled because the process got
// a signal.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string {
	return "interrupted (" + signalName(e.sig) + ")"
}

// code returns the exit code of a command that this signal ended.
func (e *signalError) code() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return exitSignal + int(s)
	}
	return exitError
}

func signalName(sig os.Signal) string {
	switch sig {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// signalExitCode returns the exit code of a command that failed after ctx
// was cancelled by a signal (see signalError), and whether it was.
func signalExitCode(ctx context.Context) (int, bool) {
	if se, ok := errors.AsType[*signalError](context.Cause(ctx)); ok {
		return se.code(), true
	}
	return 0, false
}

// helpGroup is a section of the root command's help.
type helpGroup struct {
	id, title string
	commands  []string
}

// commandGroups returns the sections of the root command's help, and the
// commands in each.
func commandGroups() []helpGroup {
	return []helpGroup{
		{"broker", "Broker commands:", []string{"publish", "call", "consume", "respond", "bench", "hub"}},
		{"inspect", "Inspection commands:", []string{"streams", "groups", "pending", "ack", "claim", "dlq", "tail", "send", "shards", "services"}},
		{"gateway", "Gateway commands:", []string{"gateway", "simulate", "healthcheck"}},
		{"proxy", "REST proxy commands:", []string{"proxy", "buckets"}},
		{"console", "Console:", []string{"console"}},
	}
}

// fallbackExamples returns the examples of commands whose definition has
// none.
func fallbackExamples() map[string]string {
	return map[string]string{
		"spectacles": `  spectacles                      # the console, on a terminal
  spectacles streams              # every stream, as a table
  spectacles publish MESSAGE_CREATE '{"content":"hi"}'`,
		"spectacles console": `  spectacles console --view streams
  spectacles console --read-only --no-gateway`,
		"spectacles gateway":  `  DISCORD_TOKEN=... BROKER_GROUP=gateway spectacles gateway`,
		"spectacles simulate": `  spectacles simulate --shards 2 --guilds 50 --rate 20`,
		"spectacles streams":  `  spectacles streams --json`,
		"spectacles groups":   `  spectacles groups MESSAGE_CREATE`,
		"spectacles pending": `  spectacles pending MESSAGE_CREATE audit --min-idle 1m
  spectacles pending MESSAGE_CREATE audit --after 1700000000000-0 --count 50`,
		"spectacles ack": `  spectacles ack MESSAGE_CREATE audit 1700000000000-0 1700000000001-0`,
		"spectacles claim": `  spectacles claim MESSAGE_CREATE audit 1700000000000-0 --to w2
  spectacles claim MESSAGE_CREATE audit --all --consumer w1 --min-idle 5m --to w2`,
		"spectacles dlq":         `  spectacles dlq list MESSAGE_CREATE`,
		"spectacles dlq list":    `  spectacles dlq list MESSAGE_CREATE --json`,
		"spectacles dlq requeue": `  spectacles dlq requeue MESSAGE_CREATE 1700000000000-0`,
		"spectacles dlq move":    `  spectacles dlq move MESSAGE_CREATE audit 1700000000000-0 --reason "bad payload"`,
		"spectacles tail": `  spectacles tail MESSAGE_CREATE GUILD_CREATE
  spectacles tail MESSAGE_CREATE --from 0 --filter hello`,
		"spectacles send":       `  spectacles send --guild 81384788765712384 '{"op":4,"d":{"guild_id":"81384788765712384","channel_id":null}}'`,
		"spectacles shards":     `  spectacles shards --json`,
		"spectacles version":    `  spectacles version`,
		"spectacles completion": `  source <(spectacles completion bash)`,
	}
}

// applyConventions gives the command tree what users expect of a CLI such
// as gh or kubectl: a version command and flag, shell completion, grouped
// help with an example for every command, suggestions for mistyped
// commands, and wrong arguments reported as usage errors (exit code 2) with
// the usage line.
func (a *app) applyConventions(root *cobra.Command) {
	root.Version = versionText()
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(a.versionCommand())

	// The completion scripts go where the command's output goes, which
	// InitDefaultCompletionCmd captures.
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.CompletionOptions.DisableDefaultCmd = false
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.PersistentPreRunE = func(*cobra.Command, []string) error { return nil } // no configuration needed
		}
	}

	for _, g := range commandGroups() {
		root.AddGroup(&cobra.Group{ID: g.id, Title: g.title})
	}
	group := map[string]string{}
	for _, g := range commandGroups() {
		for _, name := range g.commands {
			group[name] = g.id
		}
	}
	for _, c := range root.Commands() {
		c.GroupID = group[c.Name()]
	}

	examples := fallbackExamples()
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" {
			c.Example = examples[c.CommandPath()]
		}
		c.Args = usageArgs(c.Args)
		c.SuggestionsMinimumDistance = 2
		if !c.Runnable() && c.HasSubCommands() {
			// Cobra checks the arguments of runnable commands only.
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// usageArgs wraps a command's argument check: an unknown subcommand or a
// wrong number of arguments is a usage error (exit code 2) that shows the
// usage line, and a mistyped subcommand gets a suggestion.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if cmd.HasAvailableSubCommands() && len(args) > 0 {
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return usageErrorf("%s (usage: %s COMMAND; see %s --help)", msg, cmd.CommandPath(), cmd.CommandPath())
		}
		if check == nil {
			return nil
		}
		err := check(cmd, args)
		if err == nil {
			return nil
		}
		if _, ok := errors.AsType[*codedError](err); ok {
			return err
		}
		return usageErrorf("%w (usage: %s)", err, cmd.UseLine())
	}
}

// versionText is the module version and VCS revision the binary was built
// from, as runtime/debug records them: "devel" for a build from a source
// tree, and "commit unknown" without VCS stamping (-buildvcs=false).
func versionText() string {
	version, revision, when, modified := "devel", "unknown", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	details := []string{"commit " + revision}
	if when != "" {
		details = append(details, when)
	}
	if modified {
		details = append(details, "modified")
	}
	return fmt.Sprintf("spectacles %s (%s; %s %s/%s)", version, strings.Join(details, ", "), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit this binary was built from",
		Long: `Print one line: the module version ("devel" when built from a source tree),
the VCS commit ("unknown" when the build recorded none), the Go version and
the platform. spectacles --version prints the same.`,
		Args: argsBetween(0, 0),
		// Needs no configuration: it works whatever the environment says.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(a.stdout, versionText())
			return err
		},
	}
}

// benchFlagsError checks bench's flags: every count and the stall timeout
// must be positive (bench.Config would replace a zero by its default).
func benchFlagsError(cfg bench.Config) error {
	switch {
	case cfg.Messages < 1:
		return usageErrorf("--messages must be at least 1, got %d", cfg.Messages)
	case cfg.PayloadBytes < bench.MinPayloadBytes:
		return usageErrorf("--size: payload size must be at least %d bytes, got %d", bench.MinPayloadBytes, cfg.PayloadBytes)
	case cfg.Consumers < 1:
		return usageErrorf("--consumers must be at least 1, got %d", cfg.Consumers)
	case cfg.Publishers < 1:
		return usageErrorf("--publishers must be at least 1, got %d", cfg.Publishers)
	case cfg.StallTimeout <= 0:
		return usageErrorf("--stall-timeout must be positive, got %s", cfg.StallTimeout)
	case cfg.Batch < 0:
		return usageErrorf("--batch must be 0 (one Publish per message) or more, got %d", cfg.Batch)
	}
	return nil
}

// check reports the first console flag with a value the console cannot
// use, as a usage error; none is replaced by a default.
func (f consoleFlags) check(env lookupFunc) error {
	if f.refresh <= 0 {
		return usageErrorf("--refresh must be positive, got %s", f.refresh)
	}
	if f.simShards < 1 {
		return usageErrorf("--sim-shards must be at least 1, got %d", f.simShards)
	}
	if f.simMaxLen < 0 {
		return usageErrorf("--sim-max-len must not be negative, got %d", f.simMaxLen)
	}
	if f.view != "" {
		if err := tui.CheckView(f.view); err != nil {
			return usageErrorf("--view: %w", err)
		}
	}
	if _, err := themes.Resolve(f.theme, env); err != nil {
		return usageError(err)
	}
	return nil
}

// simulateFlagsError checks simulate's flags: counts and intervals must be
// positive (the simulator would replace a zero by its default); --guilds 0
// means no guilds.
func simulateFlagsError(cfg *simulator.Config, heartbeat, identify time.Duration) error {
	switch {
	case cfg.Shards < 1:
		return usageErrorf("--shards must be at least 1, got %d", cfg.Shards)
	case cfg.Guilds < 0:
		return usageErrorf("--guilds must not be negative, got %d", cfg.Guilds)
	case cfg.MaxConcurrency < 1:
		return usageErrorf("--max-concurrency must be at least 1, got %d", cfg.MaxConcurrency)
	case heartbeat <= 0:
		return usageErrorf("--heartbeat-interval must be positive, got %s", heartbeat)
	case identify <= 0:
		return usageErrorf("--identify-interval must be positive, got %s", identify)
	}
	if cfg.Guilds == 0 {
		cfg.Guilds = -1 // simulator.Config: negative is none, zero the default
	}
	return nil
}
