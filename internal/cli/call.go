package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

func (a *app) callCommand() *cobra.Command {
	var timeout = core.DefaultCallTimeout
	cmd := &cobra.Command{
		Use:   "call EVENT [JSON|-]",
		Short: "Publish one event, wait for one reply and print it as a JSON line",
		Long: `Publish one event (data as for publish) and wait for one reply, which is
printed as one JSON line. Byte strings in the reply print as text when they
are valid UTF-8, else as base64. A reply that cannot be decoded prints
{"error": ..., "raw_base64": ...} and fails. No reply within --timeout
fails with exit code 124.`,
		Example: `  spectacles call REQUEST '{"path":"/gateway"}' --timeout 2s`,
		Args:    argsBetween(1, 2),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if timeout <= 0 {
				return usageErrorf("--timeout must be positive, got %s", timeout)
			}
			data, b, err := a.openWithData(cmd.Context(), args[1:])
			if err != nil {
				return err
			}
			defer closeBroker(b, &err)
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			reply, err := b.Call(ctx, args[0], data)
			if err != nil {
				if errors.Is(err, core.ErrTimeout) {
					return &codedError{exitTimeout, err} // "call EVENT: timed out waiting for a reply after ..."
				}
				if errors.Is(err, context.DeadlineExceeded) {
					return &codedError{exitTimeout, fmt.Errorf("no reply within %s: %w", timeout, err)}
				}
				return err // core.Broker.Call's errors already name the call
			}
			out := &lineWriter{w: a.stdout}
			v, derr := reply.Data()
			if derr != nil {
				if err := out.write(map[string]any{"error": derr.Error(), "raw_base64": base64.StdEncoding.EncodeToString(reply.Raw)}); err != nil {
					return err
				}
				return fmt.Errorf("call %s: the reply cannot be decoded: %w", termtext.Quote(args[0]), derr)
			}
			return out.write(core.JSONValue(v))
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for the reply")
	return cmd
}
