package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/internal/localnode"
	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// nodeMode is what a command does for Redis when no REDIS_URL is set (see
// internal/localnode): every mode first uses the local node when one runs.
type nodeMode int

const (
	// nodeAttach fails with a hint when no local node runs: a short-lived
	// command would only talk to a server of its own, which is gone when
	// it exits (a publish would vanish).
	nodeAttach nodeMode = iota
	// nodeStart starts the local node and advertises it: long-lived
	// commands, which others can talk to while they run.
	nodeStart
	// nodePrivate starts a server of its own, not advertised: bench,
	// which measures the embedded server and takes it away at its end.
	nodePrivate
)

// errNoLocalNode is the hint a short-lived command gives when it has no
// broker to talk to.
var errNoLocalNode = errors.New("no local node is running and REDIS_URL is not set: start one with 'spectacles consume ...' or 'spectacles' (the console), or set REDIS_URL")

// commandNodeMode returns the nodeMode of cmd, by its name: long-lived
// commands start the local node, bench runs a private server, and every
// other command (publish, call, send, the inspection commands) needs a
// running one.
func commandNodeMode(cmd *cobra.Command) nodeMode {
	switch cmd.Name() {
	case "spectacles", "console", "consume", "gateway", "respond", "proxy":
		return nodeStart
	case "bench":
		return nodePrivate
	}
	return nodeAttach
}

// localRedis returns the URL of the local node, starting it or a private
// server as a.nodeMode says, and says which on stderr. The caller holds
// a.mu.
func (a *app) localRedis() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := localnode.Dir(a.env)
	var start func() (localnode.Server, error)
	var started *embedded.Server
	if a.nodeMode == nodeStart {
		start = func() (localnode.Server, error) {
			e, err := startEmbedded()
			if err != nil {
				return nil, err
			}
			started = e
			return e, nil
		}
	}
	n, err := localnode.Join(ctx, dir, start)
	switch {
	case err == nil && n.Owned:
		a.node = n
		// This process's clients talk to it in-process; others use
		// the advertised TCP address.
		a.dialer = started.DialContext
		fmt.Fprintf(a.stderr, "spectacles: REDIS_URL is not set: started an embedded in-memory Redis broker at %s, the local node (advertised in %s).\n", n.Addr, n.Path)
		fmt.Fprintf(a.stderr, "spectacles: it keeps nothing on disk and is gone when this process exits. Other spectacles commands of this user use it while it runs; other local processes can with:\n")
		fmt.Fprintf(a.stderr, "REDIS_URL=%s\n", n.URL())
		return n.URL(), nil
	case err == nil:
		a.node = n
		fmt.Fprintf(a.stderr, "spectacles: REDIS_URL is not set: using the local node, the embedded Redis at %s of spectacles process %d.\n", n.Addr, n.PID)
		return n.URL(), nil
	case errors.Is(err, localnode.ErrNotRunning) && a.nodeMode == nodeAttach:
		return "", usageError(errNoLocalNode)
	case errors.Is(err, localnode.ErrNotRunning), errors.Is(err, errors.ErrUnsupported) && a.nodeMode != nodeAttach:
		// A private server (bench; any long-lived command where the
		// system has no local node, as before it existed).
	default:
		return "", fmt.Errorf("no REDIS_URL given, and the local node cannot be used: %w", err)
	}
	e, err := startEmbedded()
	if err != nil {
		return "", err
	}
	a.embedded = e
	a.dialer = e.DialContext
	fmt.Fprintf(a.stderr, "spectacles: REDIS_URL is not set and no local node is running: started a private embedded in-memory Redis broker at %s for this command; it keeps nothing on disk and is gone when it exits.\n", e.Addr())
	return e.URL(), nil
}

// startEmbedded starts an embedded Redis server.
func startEmbedded() (*embedded.Server, error) {
	e, err := embedded.Start()
	if err != nil {
		return nil, fmt.Errorf("no REDIS_URL given, and the embedded Redis did not start: %w", err)
	}
	return e, nil
}

// privateEmbedded reports whether this process talks to an embedded
// server of its own that nobody else uses.
func (a *app) privateEmbedded() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.embedded != nil
}
