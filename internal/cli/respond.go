package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/termtext"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
)

// Bounds of what respond keeps of a command's output.
const (
	// respondMaxOutput bounds a command's standard output (its reply).
	respondMaxOutput = 16 << 20
	// respondStderrTail is how much of the end of a failed command's
	// standard error goes into the dead letter's reason.
	respondStderrTail = 1024
)

// errOutputTooLarge ends a command whose output passed respondMaxOutput.
var errOutputTooLarge = fmt.Errorf("the command's output passed %d bytes", respondMaxOutput)

func (a *app) respondCommand() *cobra.Command {
	var replyText string
	timeout := core.DefaultCallTimeout
	concurrency := 1
	cmd := &cobra.Command{
		Use:   "respond --group GROUP EVENT... (--reply JSON | -- COMMAND [ARG...])",
		Short: "Answer calls: consume events for a group and reply with a command's output",
		Long: `Consume events as a client of a group (--group or BROKER_GROUP is required)
and answer each message's caller, as a service would: with the fixed
--reply JSON, or by running COMMAND (everything after --) once per message.

The command gets the message's data on standard input as one JSON line (the
"data" value that consume prints; byte strings are text when valid UTF-8,
else base64), and its metadata in the environment: SPECTACLES_EVENT,
SPECTACLES_ID and SPECTACLES_DELIVERIES. Its standard output, which must be
one JSON value (at most 16 MiB), is the reply. The message is acknowledged
after the reply was published.

A command that exits non-zero, prints something that is not JSON, or runs
longer than --timeout (its whole process group is then killed) answers
nothing: the message is rejected to the dead-letter stream EVENT:dlq with a
reason holding the last 1 KiB of its standard error (escaped). So is a
message whose payload cannot be decoded, without running the command.

Every Redis message can be a call (the reply goes to the channel
EVENT:ID); a reply nobody is subscribed to is published again for up to
1 s, for callers that subscribe after publishing, then dropped. With
BROKER_TYPE=amqp, a message that is not a call (no reply_to) is
acknowledged without a reply, after the command ran, and a warning is
printed once.

SIGINT or SIGTERM stops reading, waits for running commands (they do not
get the signal), replies, and exits 0.`,
		Example: `  spectacles respond REQUEST --group svc --reply '{"ok":true}'
  spectacles respond REQUEST --group svc -- jq -c '{echo: .}'
  spectacles call REQUEST '{"n":1}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash == 0 || (dash < 0 && len(args) == 0) {
				return usageErrorf("respond needs at least one event (usage: %s)", cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			events, command := args, []string(nil)
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				events, command = args[:dash], args[dash:]
			}
			replySet := cmd.Flags().Changed("reply")
			switch {
			case replySet && len(command) > 0:
				return usageErrorf("give either --reply or a command after --, not both")
			case !replySet && len(command) == 0:
				return usageErrorf("respond needs a reply: --reply JSON, or a command after -- (e.g. respond EVENT --group G -- cat)")
			}
			var fixed any
			if replySet {
				v, err := core.DecodeJSON([]byte(replyText))
				if err != nil {
					return usageErrorf("--reply is not valid JSON: %w", err)
				}
				fixed = v
			}
			b, err := a.openGroupMember(cmd.Context(), "respond", concurrency, &timeout, events...)
			if err != nil {
				return err
			}
			defer closeBroker(b, &err)

			r := &responder{a: a, command: command, fixed: fixed, timeout: timeout}
			ctx := cmd.Context()
			if err := b.Consume(ctx, events, r.handle); err != nil {
				return fmt.Errorf("respond: %w", err)
			}
			id := a.cfg.Identity()
			a.log.Info("responding", "events", events, "group", id.Group, "client", id.Client)
			// As consume: the deferred Close waits for running handlers.
			var inputEnded <-chan struct{}
			if d, ok := b.(interface{ Done() <-chan struct{} }); ok {
				inputEnded = d.Done()
			}
			select {
			case <-ctx.Done():
				a.log.Info("stopping: waiting for running commands")
			case <-inputEnded:
				a.log.Info("the input ended")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&replyText, "reply", "", "answer every call with this JSON instead of running a command")
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long one command may run before its process group is killed")
	cmd.Flags().IntVar(&concurrency, "concurrency", concurrency, "messages handled (commands run) at once")
	return cmd
}

// responder answers the messages of one respond command.
type responder struct {
	a       *app
	command []string
	fixed   any // the --reply value, when no command is given
	timeout time.Duration

	notCallOnce sync.Once
}

// handle answers one message: it runs the command (or takes --reply),
// replies, then acks; a failure rejects the message to its dead letter.
func (r *responder) handle(ctx context.Context, m *core.Message) {
	log := r.a.log.With("event", m.Event, "id", m.ID)
	data, err := m.Data()
	if err != nil {
		r.reject(ctx, m, log, "the payload cannot be decoded: "+err.Error())
		return
	}
	reply := r.fixed
	if r.command != nil {
		out, reason := r.run(m, data)
		if reason != "" {
			r.reject(ctx, m, log, reason)
			return
		}
		reply = out
	}
	if err := m.Reply(ctx, reply); err != nil {
		if !errors.Is(err, amqptransport.ErrNoReplyTo) {
			log.Warn("reply failed; the message stays unacknowledged and will be delivered again", "err", err)
			return
		}
		r.notCallOnce.Do(func() {
			log.Warn("a message is not a call (it has no reply_to): such messages are acknowledged without a reply")
		})
	}
	if err := m.Ack(ctx); err != nil {
		log.Warn("acknowledgement failed; the message will be delivered again", "err", err)
		return
	}
	log.Debug("replied")
}

// reject dead-letters m with reason.
func (r *responder) reject(ctx context.Context, m *core.Message, log *slog.Logger, reason string) {
	log.Warn("rejecting the message to its dead letter", "reason", reason)
	if err := m.Reject(ctx, reason); err != nil {
		log.Warn("reject failed; the message stays unacknowledged", "err", err)
	}
}

// run runs the command for one message and returns its decoded output, or
// the reason it failed.
func (r *responder) run(m *core.Message, data any) (reply any, reason string) {
	input, err := jsonLine(core.JSONValue(data))
	if err != nil {
		return nil, "the data cannot be written as JSON: " + err.Error()
	}
	c := exec.Command(r.command[0], r.command[1:]...)
	// A process group of its own: a terminal's ^C does not reach it (it is
	// let finish), and a timeout kills it with everything it started.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Env = append(os.Environ(), messageEnv(m)...)
	c.Stdin = bytes.NewReader(input)
	stdout := &limitedBuffer{max: respondMaxOutput}
	stderr := &tailBuffer{max: respondStderrTail}
	c.Stdout, c.Stderr = stdout, stderr
	var timedOut, tooLarge, finished bool
	var mu sync.Mutex
	kill := func(why *bool) {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return // the group's id may be reused by now
		}
		*why = true
		// Start sets c.Process before it starts copying the output.
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	stdout.onOverflow = func() { kill(&tooLarge) }
	if err := c.Start(); err != nil {
		return nil, "the command did not start: " + err.Error()
	}
	timer := time.AfterFunc(r.timeout, func() { kill(&timedOut) })
	err = c.Wait()
	timer.Stop()
	mu.Lock()
	finished = true
	mu.Unlock()
	switch {
	case timedOut:
		return nil, withStderr(fmt.Sprintf("the command ran longer than --timeout %s and was killed", r.timeout), stderr)
	case tooLarge:
		return nil, withStderr(errOutputTooLarge.Error()+"; it was killed", stderr)
	case err != nil:
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			return nil, withStderr("the command failed: "+ee.ProcessState.String(), stderr)
		}
		return nil, withStderr("the command failed: "+err.Error(), stderr)
	}
	v, err := core.DecodeJSON(stdout.buf.Bytes())
	if err != nil {
		return nil, withStderr("the command's output is not one JSON value: "+err.Error(), stderr)
	}
	return v, ""
}

// messageEnv is the metadata of m for the command's environment. A value
// that holds NUL cannot be passed and is left out.
func messageEnv(m *core.Message) []string {
	var env []string
	for _, kv := range [][2]string{
		{"SPECTACLES_EVENT", m.Event},
		{"SPECTACLES_ID", m.ID},
		{"SPECTACLES_DELIVERIES", strconv.Itoa(m.Deliveries)},
	} {
		if !strings.ContainsRune(kv[1], 0) {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

// withStderr appends the end of the command's standard error, escaped, to
// a reason.
func withStderr(reason string, stderr *tailBuffer) string {
	tail := stderr.String()
	if tail == "" {
		return reason
	}
	return reason + "; stderr: " + termtext.Escape(tail)
}

// jsonLine encodes v as one JSON line, as consume prints it.
func jsonLine(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return termtext.JSON(buf.Bytes()), nil
}

// limitedBuffer keeps up to max bytes; past that it calls onOverflow once
// and fails the write.
type limitedBuffer struct {
	max        int
	buf        bytes.Buffer
	onOverflow func()
	over       bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.over || l.buf.Len()+len(p) > l.max {
		if !l.over {
			l.over = true
			if l.onOverflow != nil {
				l.onOverflow()
			}
		}
		return 0, errOutputTooLarge
	}
	return l.buf.Write(p)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
	cut bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return len(p), nil
}

// String returns the kept text without trailing line breaks, starting at a
// UTF-8 boundary, and with "..." in front when the start was cut.
func (t *tailBuffer) String() string {
	b := bytes.TrimRight(t.buf, "\r\n")
	if !t.cut {
		return string(b)
	}
	for i := 0; i < utf8.UTFMax && i < len(b) && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	return "..." + string(b)
}
