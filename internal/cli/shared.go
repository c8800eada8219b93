package cli

import (
	"context"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// mapViews maps every element of in through view, in order; the commands use
// it to turn what a broker returns into the JSON shapes they print.
func mapViews[T, V any](in []T, view func(T) V) []V {
	out := make([]V, 0, len(in))
	for _, x := range in {
		out = append(out, view(x))
	}
	return out
}

// openWithData reads the DATA argument (see readData) and then opens a
// broker client named by the configured identity, as publish and call do.
// The caller closes the broker.
func (a *app) openWithData(ctx context.Context, args []string) (any, core.Broker, error) {
	data, err := a.readData(args)
	if err != nil {
		return nil, nil, err
	}
	b, err := a.open(ctx, a.options(a.cfg.Identity()))
	if err != nil {
		return nil, nil, err
	}
	return data, b, nil
}

// openGroupMember checks the flags of a command that joins a consumer group
// (consume, respond: a group, a positive --concurrency, then, when timeout
// is checked, a positive --timeout) and opens its broker client. The caller
// closes the broker. calls are the events it answers, for presence.
func (a *app) openGroupMember(ctx context.Context, command string, concurrency int, timeout *time.Duration, calls ...string) (core.Broker, error) {
	id := a.cfg.Identity()
	if id.Group == "" {
		return nil, usageErrorf("%s needs a group: set --group or BROKER_GROUP", command)
	}
	if concurrency < 1 {
		return nil, usageErrorf("--concurrency must be at least 1, got %d", concurrency)
	}
	if timeout != nil && *timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive, got %s", *timeout)
	}
	opts := a.options(id)
	opts.Concurrency = concurrency
	opts.Announce.Calls = calls
	return a.open(ctx, opts)
}
