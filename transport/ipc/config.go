package ipc

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spectacles-go/spectacles/core"
)

// Format is how messages are framed on the streams.
type Format int

const (
	// JSONLines is the protocol's IPC format and the default: one JSON
	// object per line, {"event": …, "data": …} plus the fields the package
	// documentation lists.
	JSONLines Format = iota
	// Msgpack is spec-tacles/go's stdio format: back-to-back msgpack maps
	// {"event": …, "data": …} with no framing.
	Msgpack
)

// String returns the format's configuration name: "json" or "msgpack".
func (f Format) String() string {
	switch f {
	case JSONLines:
		return "json"
	case Msgpack:
		return "msgpack"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// ParseFormat returns the format configured by name: "json" (also
// "jsonl", "json-lines", and the default when name is empty) or
// "msgpack".
func ParseFormat(name string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "json", "jsonl", "json-lines", "jsonlines":
		return JSONLines, nil
	case "msgpack":
		return Msgpack, nil
	}
	return 0, fmt.Errorf("%w: unknown format %q (want json or msgpack)", ErrInvalidConfig, name)
}

// Defaults for Config fields left zero.
const (
	// DefaultQueueSize is how many received messages wait per Consume.
	DefaultQueueSize = 1024
	// DefaultMaxMessageSize bounds one line or one msgpack value (64 MiB:
	// a GUILD_CREATE of a very large guild is several MiB).
	DefaultMaxMessageSize = 64 << 20
)

// ErrInvalidConfig is wrapped by the errors of New, Stdio and ParseFormat
// for settings that cannot work.
var ErrInvalidConfig = errors.New("invalid ipc broker config")

// ErrInputEnded is wrapped by the error of a Call made, or waiting, after
// the input ended: no reply can arrive any more.
var ErrInputEnded = errors.New("ipc input ended")

// Config configures the driver.
//
// Of core.Options, MessageTimeout and MaxDeliveries have no effect: IPC
// cannot redeliver. Codec is not how payloads are written (the Format
// decides that, see the package documentation); it decodes payloads that
// arrive as opaque bytes ("data_base64", "data_bin").
type Config struct {
	core.Options
	// Format is the framing: JSONLines (the default) or Msgpack.
	Format Format
	// QueueSize is how many received messages may wait for a free handler,
	// per Consume, before reading pauses (which, through the pipe, slows the
	// writer down). Replies come on the same input: while reading pauses,
	// calls made from handlers wait, and may time out. Default
	// DefaultQueueSize.
	QueueSize int
	// MaxMessageSize is the longest line (JSONLines) or msgpack value
	// (Msgpack) read; longer ones are skipped with a log. Default
	// DefaultMaxMessageSize.
	MaxMessageSize int
}

// withDefaults validates c and fills its zero fields.
func (c Config) withDefaults() (Config, error) {
	if c.Format != JSONLines && c.Format != Msgpack {
		return c, fmt.Errorf("%w: unknown format %s", ErrInvalidConfig, c.Format)
	}
	if c.QueueSize < 0 || c.MaxMessageSize < 0 {
		return c, fmt.Errorf("%w: QueueSize and MaxMessageSize must not be negative", ErrInvalidConfig)
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	c.Options = c.Options.WithDefaults()
	return c, nil
}
