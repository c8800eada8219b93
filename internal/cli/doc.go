// Package cli is the command layer of the spectacles command: it turns the
// library (core, the broker drivers under transport, gateway, tui) into
// commands. Run is its one entry point; the main package at the module
// root calls it with the process's arguments, streams and environment,
// after turning SIGINT and SIGTERM into a cancellation (SignalCause), and
// exits with the code it returns.
//
// The commands, by file: publish.go, call.go, consume.go, respond.go and
// bench.go (the broker commands), inspect.go (streams, groups, pending,
// ack, claim, dlq, tail, send, shards), gateway.go, simulate.go and
// healthcheck.go, console.go (the console) and demo.go (its demo mode: the
// built-in Discord simulator, a gateway on it and a simulated bot).
// Around them: cli.go (the root command, the broker a command opens, exit
// codes and error lines), config.go and gateway_config.go (the settings,
// from flags and from spec-tacles/gateway's environment variables),
// conventions.go (what every command shares: signals, help sections
// and examples, argument and flag checks, version), jsonout.go
// (--json output) and localnode.go (the local node used without
// REDIS_URL).
//
// The package holds no global state: Run may run many times at once in one
// process, as its tests do.
package cli
