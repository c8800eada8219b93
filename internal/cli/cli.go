package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/spf13/cobra"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/localnode"
	"github.com/spectacles-go/spectacles/internal/redact"
	"github.com/spectacles-go/spectacles/internal/termtext"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
	"github.com/spectacles-go/spectacles/transport/hub"
	"github.com/spectacles-go/spectacles/transport/ipc"
	redistransport "github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1   // the command failed
	exitUsage    = 2   // bad arguments, flags, configuration or input
	exitInternal = 70  // a bug: a panic was caught
	exitTimeout  = 124 // call got no reply in time (as timeout(1))
)

// codedError carries the exit code an error should end the process with.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// usageError marks err as the user's mistake (exit code 2).
func usageError(err error) error { return &codedError{exitUsage, err} }

// usageErrorf formats a usage error.
func usageErrorf(format string, args ...any) error {
	return usageError(fmt.Errorf(format, args...))
}

func exitCode(err error) int {
	if ce, ok := errors.AsType[*codedError](err); ok {
		return ce.code
	}
	if errors.Is(err, core.ErrTimeout) {
		return exitTimeout
	}
	return exitError
}

// app is one invocation of the command: its streams, environment and the
// resources it opened. It holds no global state, so that tests can run many
// in one process.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	env            lookupFunc

	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	ipcOut   io.Writer // the ipc broker's output (stdout), when BROKER_TYPE=ipc
	ipcUsed  bool
	embedded *embedded.Server
	url      string // the Redis URL in use, once known
	rawURLs  []string

	node     *localnode.Node // the local node in use, without REDIS_URL
	nodeMode nodeMode        // what the command does without REDIS_URL
	// dialer connects in-process to the embedded server this process
	// runs (a private one, or the local node it owns), nil otherwise.
	dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Run executes the command line args (without the program name) with the
// given streams and environment lookup (os.LookupEnv in a process) and
// returns the process exit code: 0, 1 when the command failed, 2 for bad
// usage, 70 for a bug, 124 when a call timed out, and 128 + n when ctx was
// cancelled with SignalCause of signal n. It holds no global state: many
// may run in one process.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) (string, bool)) int {
	return run(ctx, args, stdin, stdout, stderr, env)
}

// SignalCause is the cause to cancel Run's context with when the process
// gets sig: the command it ends reports "interrupted (SIGINT)" and exits
// 128 + the signal's number, as shells report it.
func SignalCause(sig os.Signal) error { return &signalError{sig: sig} }

// run executes the command line args and returns the process exit code.
// Errors are printed to stderr as one line, "spectacles: <message>".
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env lookupFunc) (code int) {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, env: env, log: slog.New(slog.NewTextHandler(stderr, nil))}
	for _, name := range []string{"REDIS_URL", "AMQP_URL", "AMQP_MANAGEMENT_URL", "HUB_URL"} {
		if v, ok := env(name); ok {
			a.rawURLs = append(a.rawURLs, v)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			a.printError(fmt.Errorf("internal error: %v", r))
			code = exitInternal
		}
	}()
	defer a.closeEmbedded()

	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		a.printError(err)
		if code, ok := signalExitCode(ctx); ok {
			return code
		}
		return exitCode(err)
	}
	return exitOK
}

// printError prints err as one line with every Redis credential removed
// and every control character, bidi control and invalid byte (of a name
// the message quotes) escaped.
func (a *app) printError(err error) {
	msg := err.Error()
	for _, u := range a.rawURLs {
		msg = redact.Text(msg, u)
	}
	msg = strings.Join(strings.Fields(termtext.EscapeLines(msg)), " ")
	fmt.Fprintf(a.stderr, "spectacles: %s\n", msg)
}

func (a *app) rootCommand() *cobra.Command {
	var console consoleFlags // spectacles with no arguments opens the console
	root := &cobra.Command{
		Use:   "spectacles",
		Short: "Publish, call, consume and benchmark Spectacles events",
		Long: `spectacles talks the Spectacles protocol through a broker (Redis streams,
RabbitMQ, or JSON lines on stdin and stdout: --broker-type): services
coordinate through it, each with a group name (shared by its instances;
every message goes once to one client of each group) and a client name.

Configuration comes from flags and from the environment variables of
spec-tacles/gateway (flags win). Without REDIS_URL, commands share the local
node: an embedded in-memory Redis that the first long-lived command of this
user (consume, gateway, the console) starts and advertises, for its life.
Short-lived commands (publish, call, inspection) use it, or fail when none
runs; bench uses it, or a private server of its own.

Output never writes a control character, bidi control or invalid UTF-8
from the broker raw: tables print such a name in the shell's $'...' form
(e.g. $'x\x1b[2Jy'), which typed back as an argument names the exact
bytes; --json escapes them, and adds KEY_base64 with the exact bytes of a
string KEY that is not valid UTF-8.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown command %q (see spectacles --help)", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return a.openConsole(cmd, console) },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.nodeMode = commandNodeMode(cmd)
			return a.configure(cmd.Root())
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageErrorf("%w (usage: %s; see %s --help)", err, cmd.UseLine(), cmd.CommandPath())
	})
	root.CompletionOptions.DisableDefaultCmd = true
	console.register(root.Flags())
	for _, s := range settings() {
		usage := fmt.Sprintf("%s (env %s", s.usage, s.env)
		if s.def != "" {
			usage += ", default " + redact.URL(s.def)
		}
		root.PersistentFlags().Var(&textFlag{typ: s.typ}, s.flag, usage+")")
	}
	root.AddCommand(a.publishCommand(), a.callCommand(), a.consumeCommand(), a.benchCommand(), a.gatewayCommand(), a.simulateCommand(),
		a.streamsCommand(), a.groupsCommand(), a.pendingCommand(), a.ackCommand(), a.claimCommand(), a.dlqCommand(),
		a.tailCommand(), a.sendCommand(), a.shardsCommand(), a.consoleCommand())
	root.AddCommand(a.respondCommand())
	root.AddCommand(a.healthcheckCommand())
	root.AddCommand(a.hubCommand())
	root.AddCommand(a.servicesCommand())
	root.AddCommand(a.proxyCommand(), a.bucketsCommand())
	a.applyConventions(root)
	return root
}

// configure reads the configuration once the flags are parsed.
func (a *app) configure(root *cobra.Command) error {
	flags := func(name string) (string, bool) {
		f := root.PersistentFlags().Lookup(name)
		if f == nil || !f.Changed {
			return "", false
		}
		return f.Value.String(), true
	}
	for _, name := range []string{"redis-url", "amqp-url", "amqp-management-url", "hub-url"} {
		if v, ok := flags(name); ok {
			a.rawURLs = append(a.rawURLs, v)
		}
	}
	cfg, err := loadConfig(a.env, flags)
	if err != nil {
		return usageError(err)
	}
	a.cfg = cfg
	a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if cfg.BrokerType == "ipc" {
		// Standard output carries the broker's messages: what the
		// commands print goes to standard error instead.
		a.ipcOut, a.stdout = a.stdout, a.stderr
	}
	return nil
}

// textFlag is a flag whose text is parsed later, by loadConfig, so that
// flags and environment variables share one parser and one error format.
type textFlag struct{ value, typ string }

func (f *textFlag) String() string     { return f.value }
func (f *textFlag) Set(v string) error { f.value = v; return nil }
func (f *textFlag) Type() string       { return f.typ }

// redisURL returns the Redis server to use: when none is configured, the
// local node, or an embedded server as the command's nodeMode says
// (localRedis).
func (a *app) redisURL() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.url != "" {
		return a.url, nil
	}
	if a.cfg.RedisURL != "" {
		a.url = a.cfg.RedisURL
		return a.url, nil
	}
	url, err := a.localRedis()
	if err != nil {
		return "", err
	}
	a.url = url
	return a.url, nil
}

// embeddedDialer returns the in-process dialer of the embedded server
// this process runs and talks to (no REDIS_URL), else nil.
func (a *app) embeddedDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.RedisURL != "" {
		return nil
	}
	return a.dialer
}

func (a *app) closeEmbedded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dialer = nil
	if a.embedded != nil {
		a.embedded.Close()
		a.embedded = nil
	}
	if a.node != nil {
		if err := a.node.Close(); err != nil {
			a.log.Warn("local node advertisement not removed", "err", err)
		}
		a.node = nil
	}
}

// brokerName names the broker for reports.
func (a *app) brokerName() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.embedded != nil || a.node != nil {
		return "redis-embedded"
	}
	return a.cfg.BrokerType
}

// options returns the configured driver options for a client named id.
func (a *app) options(id core.Identity) core.Options { return a.cfg.Options(id, a.log) }

// open connects a broker client of the configured type with opts (see
// options).
func (a *app) open(ctx context.Context, opts core.Options) (core.Broker, error) {
	return a.openBroker(ctx, opts, false)
}

// openBroker is open; passive opens a client that only inspects and so
// declares nothing (amqptransport.Config.Passive).
func (a *app) openBroker(ctx context.Context, opts core.Options, passive bool) (core.Broker, error) {
	switch a.cfg.BrokerType {
	case "amqp":
		if opts.Identity.Group == "" {
			return nil, usageErrorf("BROKER_TYPE=amqp publishes to the exchange named by the group: set --group or BROKER_GROUP")
		}
		b, err := amqptransport.Open(ctx, amqptransport.Config{Options: opts, URL: a.cfg.AMQPURL, Subgroup: a.cfg.Subgroup,
			ManagementURL: a.cfg.AMQPManagementURL, Passive: passive})
		if err != nil {
			return nil, err // "amqp: connect to URL: ...", without the password
		}
		a.log.Debug("connected", "amqp", redact.URL(a.cfg.AMQPURL), "group", opts.Identity.Group, "client", opts.Identity.Client)
		return b, nil
	case "ipc":
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.ipcUsed {
			return nil, errors.New("the ipc broker has one pair of streams (stdin and stdout): this command needs a broker server (BROKER_TYPE=redis or amqp)")
		}
		a.ipcUsed = true
		b, err := ipc.New(a.stdin, a.ipcOut, ipc.Config{Options: opts, Format: a.cfg.IPCFormat})
		if err != nil {
			return nil, fmt.Errorf("ipc broker: %w", err)
		}
		return b, nil
	case "hub":
		b, err := hub.Open(ctx, hub.Config{Options: opts, URL: a.cfg.HubURL})
		if err != nil {
			return nil, err // "hub: connect to URL: ..."
		}
		a.log.Debug("connected", "hub", redact.URL(a.cfg.HubURL), "group", opts.Identity.Group, "client", opts.Identity.Client)
		return b, nil
	}
	return a.openRedis(ctx, opts)
}

// openRedis connects a Redis broker client with opts.
func (a *app) openRedis(ctx context.Context, opts core.Options) (*redistransport.Broker, error) {
	return a.openRedisTrimmed(ctx, opts, 0)
}

// openRedisTrimmed is openRedis for a client whose publishes trim each
// stream to about maxLen entries (0: no trimming).
func (a *app) openRedisTrimmed(ctx context.Context, opts core.Options, maxLen int64) (*redistransport.Broker, error) {
	url, err := a.redisURL()
	if err != nil {
		return nil, err
	}
	id := opts.Identity
	cfg := redistransport.Config{
		Options:  opts,
		URL:      url,
		PoolSize: a.cfg.PoolSize,
		MaxLen:   maxLen,
		Dialer:   a.embeddedDialer(),
	}
	b, err := redistransport.Open(ctx, cfg)
	if err != nil {
		return nil, err // it names the server, without the password
	}
	a.log.Debug("connected", "redis", redact.URL(url), "group", id.Group, "client", id.Client)
	return b, nil
}

// redisClienter is implemented by brokers that expose their Redis client.
type redisClienter interface {
	Client() goredis.UniversalClient
}

// redisClient returns a Redis client for what needs Redis besides the
// broker (shard sessions, identify coordination, shard health): the
// broker's own when it is Redis, else one for REDIS_URL, which done
// closes, else nil.
func (a *app) redisClient(b core.Broker) (client goredis.UniversalClient, done func(), err error) {
	if rc, ok := b.(redisClienter); ok {
		return rc.Client(), func() {}, nil
	}
	if a.cfg.RedisURL == "" {
		return nil, func() {}, nil
	}
	c, err := redistransport.NewClient(a.cfg.RedisURL, a.cfg.PoolSize)
	if err != nil {
		return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return c, func() { _ = c.Close() }, nil
}

// closeBroker closes b, adding a close failure to *err unless it already
// holds one.
func closeBroker(b core.Broker, err *error) {
	if cerr := b.Close(); cerr != nil && *err == nil {
		*err = fmt.Errorf("close broker: %w", cerr)
	}
}

// readData returns the JSON text of a command: args[0] when it is given and
// not "-", else standard input (which must not be a terminal when no
// argument is given).
func (a *app) readData(args []string) (any, error) {
	var text []byte
	switch {
	case len(args) > 0 && args[0] != "-":
		text = []byte(args[0])
	case len(args) == 0 && isTerminal(a.stdin):
		return nil, usageErrorf("no data: give JSON as an argument, or pipe it on standard input")
	default:
		b, err := io.ReadAll(a.stdin)
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		text = b
	}
	v, err := core.DecodeJSON(text)
	if err != nil {
		return nil, usageErrorf("data is not valid JSON: %w", err)
	}
	return v, nil
}

// isTerminal reports whether r is a terminal or other character device
// (nothing is piped into it).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// lineWriter writes JSON lines from concurrent handlers, one whole line at
// a time.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// write writes v as one JSON line. Besides what encoding/json escapes,
// DEL, C1 controls and bidi and other format characters are written as
// \uXXXX (termtext.JSON), so that no JSON output acts on a terminal.
func (l *lineWriter) write(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	out := termtext.JSON(buf.Bytes())
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(out); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// base64IfInvalid returns s in standard base64 when it is not valid UTF-8,
// else "". JSON cannot hold such a string (encoding/json writes U+FFFD for
// each bad byte), so the JSON outputs add it as KEY_base64 next to KEY:
// the exact bytes of a name, to type back ($'\xff' in a shell).
func base64IfInvalid(s string) string {
	if utf8.ValidString(s) {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(s))
}

// headersBase64 returns every header with its key and value in base64
// when one key or value is not valid UTF-8, else nil: the JSON outputs
// print it as headers_base64 next to headers.
func headersBase64(h map[string]string) map[string]string {
	valid := true
	for k, v := range h {
		valid = valid && utf8.ValidString(k) && utf8.ValidString(v)
	}
	if valid {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[base64.StdEncoding.EncodeToString([]byte(k))] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	return out
}
