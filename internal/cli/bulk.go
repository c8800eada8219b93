package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// The --all form of ack, claim and dlq move: instead of ids, a rule
// (--consumer, --min-idle, --min-deliveries) that the broker applies to the
// whole pending list of the group, in batches, checking each message when
// it acts on it (core.BulkPendingInspector). Each prints how many messages
// it settled; interrupted, it prints how many it settled so far and exits
// with the signal's code.

// bulkFlags are the --all selection of a command on pending messages.
type bulkFlags struct {
	all  bool
	rule core.PendingRule
}

// add adds --all, --consumer and --min-deliveries to fs, and --min-idle
// when idle (claim has its own).
func (f *bulkFlags) add(fs *pflag.FlagSet, idle bool) {
	fs.BoolVar(&f.all, "all", false, "act on every pending message of the group that matches --consumer, --min-idle and --min-deliveries (in batches), instead of IDs")
	fs.StringVar(&f.rule.Consumer, "consumer", "", "with --all: only this consumer's messages")
	fs.Int64Var(&f.rule.MinDeliveries, "min-deliveries", 0, "with --all: only messages delivered at least this many times")
	if idle {
		fs.DurationVar(&f.rule.MinIdle, "min-idle", 0, "with --all: only messages idle at least this long")
	}
}

// args checks a command's arguments: STREAM GROUP with --all, else STREAM
// GROUP ID... and no rule flags.
func (f *bulkFlags) args(cmd *cobra.Command, args []string) error {
	if f.all {
		if len(args) != 2 {
			return fmt.Errorf("--all takes STREAM GROUP and no ids, got %d arguments", len(args))
		}
		return nil
	}
	for _, name := range []string{"consumer", "min-deliveries"} {
		if cmd.Flags().Changed(name) {
			return usageErrorf("--%s selects with --all; add --all, or give ids without it", name)
		}
	}
	if cmd.Flags().Changed("min-idle") && cmd.Name() != "claim" {
		return usageErrorf("--min-idle selects with --all; add --all, or give ids without it")
	}
	return cobra.MinimumNArgs(3)(cmd, args)
}

// runBulk runs do on in as a core.BulkPendingInspector (op names the
// command for errors), with a progress line on stderr when it is a
// terminal.
func (a *app) runBulk(op string, in core.PendingInspector, do func(core.BulkPendingInspector, func(core.BulkProgress)) (core.BulkResult, error)) (core.BulkResult, error) {
	b, ok := in.(core.BulkPendingInspector)
	if !ok {
		return core.BulkResult{}, fmt.Errorf("%s --all: %w: this broker cannot settle pending messages by rule", op, core.ErrUnsupported)
	}
	if !isTerminalWriter(a.stderr) {
		return do(b, nil)
	}
	res, err := do(b, func(p core.BulkProgress) {
		fmt.Fprintf(a.stderr, "\r%s: %d of %d…\x1b[K", op, p.Done, p.Total)
	})
	fmt.Fprint(a.stderr, "\r\x1b[K")
	return res, err
}

// bulkDone prints what a bulk command did, then returns its error: what
// was settled before an interruption or a failure is reported too.
func (a *app) bulkDone(asJSON bool, v any, n int, text string, err error) error {
	if n == 0 && err != nil {
		return err
	}
	if oerr := a.output(asJSON, v, func(w *tabwriter.Writer) { fmt.Fprintln(w, text) }); err == nil {
		err = oerr
	}
	return err
}

// ackAll acknowledges every pending message of args' group that f's rule
// matches.
func (a *app) ackAll(ctx context.Context, in core.PendingInspector, args []string, f bulkFlags, asJSON bool) error {
	res, err := a.runBulk("ack", in, func(b core.BulkPendingInspector, progress func(core.BulkProgress)) (core.BulkResult, error) {
		return b.AckPending(ctx, args[0], args[1], f.rule, progress)
	})
	return a.bulkDone(asJSON, ackJSON{target: newTarget(args[0], args[1]), AckedCount: res.Count}, res.Count,
		fmt.Sprintf("acknowledged %d (%s)", res.Count, termtext.Escape(f.rule.String())), err)
}

// claimAll gives every pending message of args' group that f's rule
// matches to to.
func (a *app) claimAll(ctx context.Context, in core.PendingInspector, args []string, f bulkFlags, to string, asJSON bool) error {
	res, err := a.runBulk("claim", in, func(b core.BulkPendingInspector, progress func(core.BulkProgress)) (core.BulkResult, error) {
		return b.ClaimPending(ctx, args[0], args[1], to, f.rule, progress)
	})
	v := claimAllJSON{target: newTarget(args[0], args[1]), Consumer: to, ConsumerBase64: base64IfInvalid(to), ClaimedCount: res.Count}
	return a.bulkDone(asJSON, v, res.Count, fmt.Sprintf("claimed %d for %s (%s)", res.Count, quote(to), termtext.Escape(f.rule.String())), err)
}

// moveAll moves every pending message of args' group that f's rule
// matches to the dead letters.
func (a *app) moveAll(ctx context.Context, in core.PendingInspector, args []string, f bulkFlags, reason string, asJSON bool) error {
	res, err := a.runBulk("dlq move", in, func(b core.BulkPendingInspector, progress func(core.BulkProgress)) (core.BulkResult, error) {
		return b.DeadLetterPending(ctx, args[0], args[1], reason, f.rule, progress)
	})
	dl := core.DeadLetterEvent(args[0])
	v := moveJSON{target: newTarget(args[0], args[1]), MovedCount: res.Count, Event: dl, EventBase64: base64IfInvalid(dl)}
	return a.bulkDone(asJSON, v, res.Count, fmt.Sprintf("moved %d to %s (%s)", res.Count, quote(dl), termtext.Escape(f.rule.String())), err)
}
