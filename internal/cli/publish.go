package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// argsBetween accepts min to max positional arguments, reporting a wrong
// count as a usage error.
func argsBetween(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || (hi >= 0 && len(args) > hi) {
			return usageErrorf("wrong number of arguments (usage: %s)", cmd.UseLine())
		}
		return nil
	}
}

func (a *app) publishCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "publish EVENT [JSON|-]",
		Short: "Publish one event and print its message id",
		Long: `Publish one event. The data is JSON, given as the second argument, or read
from standard input when it is "-" or missing and input is piped. It is
sent with the configured codec (msgpack by default). The message id is
printed.`,
		Example: `  spectacles publish MESSAGE_CREATE '{"content":"hi"}'
  echo '{"content":"hi"}' | spectacles publish MESSAGE_CREATE`,
		Args: argsBetween(1, 2),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			data, b, err := a.openWithData(cmd.Context(), args[1:])
			if err != nil {
				return err
			}
			defer closeBroker(b, &err)
			// SEND and shard ids in the form every gateway reads.
			if data, err = gateway.EncodePacket(args[0], data); err != nil {
				return usageError(err)
			}
			id, err := b.Publish(cmd.Context(), args[0], data)
			if err != nil {
				return err // core.Broker.Publish's errors already name the event
			}
			_, err = fmt.Fprintln(a.stdout, termtext.Quote(id))
			return err
		},
	}
}
