// Command spectacles publishes, calls, consumes, answers (respond) and
// benchmarks Spectacles events through a broker (BROKER_TYPE: Redis
// streams, RabbitMQ, or JSON lines on stdin and stdout), inspects and
// repairs what the broker holds (streams, groups, pending, ack, claim,
// dlq, tail, send, shards), runs Discord gateway shards (gateway,
// healthcheck) or a simulator of Discord's gateway (simulate), and, run
// with no arguments on a terminal, opens the console.
//
//	spectacles publish EVENT [JSON|-]
//	spectacles call EVENT [JSON|-] --timeout 5s
//	spectacles consume --group GROUP EVENT...
//	spectacles bench --messages N --size BYTES --consumers C --publishers P
//	spectacles gateway
//	spectacles
//
// Configuration comes from flags and from the environment variables that
// spec-tacles/gateway reads (BROKER_TYPE, BROKER_GROUP, REDIS_URL, ...);
// see README.md. On Redis without REDIS_URL the commands share the local
// node, an embedded in-memory Redis that the first long-lived command
// starts.
//
// The commands are in internal/cli; this package sets up the process:
// go-redis's logger, signals and the exit code.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/internal/cli"
)

func main() {
	// go-redis prints its own retries straight to stderr; the driver
	// reports failures through our logger and errors, so keep stderr to
	// our lines.
	goredis.SetLogger(quietRedisLogger{})

	// The first SIGINT or SIGTERM cancels the context with
	// cli.SignalCause(sig) as its cause (a command it ends exits 128 + the signal's number), and
	// restores the default behaviour so that a second one ends a drain
	// that takes too long.
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-sigs:
			cancel(cli.SignalCause(sig))
		case <-ctx.Done():
		}
		signal.Stop(sigs)
	}()
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.LookupEnv)
	cancel(nil)
	os.Exit(code)
}

// quietRedisLogger sends go-redis's internal messages to slog's default
// logger at debug level, which drops them.
type quietRedisLogger struct{}

func (quietRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
