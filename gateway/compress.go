package gateway

import (
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zstd"
)

// Compression is a gateway transport compression.
type Compression string

// Transport compressions Discord offers.
const (
	CompressNone Compression = "none"
	CompressZlib Compression = "zlib-stream"
	CompressZstd Compression = "zstd-stream"
)

// ErrUnknownCompression is returned for a DISCORD_COMPRESS value that is
// not one of the Compression constants.
var ErrUnknownCompression = errors.New("unknown compression")

// ParseCompression reads "zstd-stream", "zlib-stream" or "none" ("" is
// none).
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(strings.ToLower(strings.TrimSpace(s))); c {
	case "", CompressNone:
		return CompressNone, nil
	case CompressZlib, CompressZstd:
		return c, nil
	}
	return "", fmt.Errorf("%w %q (want zstd-stream, zlib-stream or none)", ErrUnknownCompression, s)
}

// query is the compress query parameter, empty for none.
func (c Compression) query() string {
	if c == CompressNone || c == "" {
		return ""
	}
	return string(c)
}

// MaxInboundPayload bounds one gateway payload's JSON text, inflated: a
// larger payload ends the connection with ErrPayloadTooLarge instead of
// growing memory without bound (a compressed stream can inflate a few
// bytes into gigabytes). Discord's largest dispatches (GUILD_CREATE of a
// big guild) are a few megabytes.
const MaxInboundPayload = 64 << 20

// ErrPayloadTooLarge ends a connection whose payload exceeds
// MaxInboundPayload.
var ErrPayloadTooLarge = errors.New("gateway payload too large")

// frameReader yields websocket messages.
type frameReader interface {
	ReadMessage() (messageType int, p []byte, err error)
}

// limitedFrames reads messages from a websocket connection that stops
// reading a message past the limit (gorilla's SetReadLimit).
type limitedFrames interface {
	frameReader
	SetReadLimit(limit int64)
}

// payloadReader yields one gateway payload's JSON text at a time from a
// connection's messages, inflating a compressed stream. One per connection:
// compression contexts span the whole connection.
type payloadReader struct {
	next  func() ([]byte, error)
	close func()
}

func newPayloadReader(conn frameReader, c Compression, maxPayload int64) (*payloadReader, error) {
	if lc, ok := conn.(limitedFrames); ok {
		// No websocket message may exceed a payload's bound either.
		lc.SetReadLimit(maxPayload)
	}
	if c == CompressNone || c == "" {
		return &payloadReader{
			next: func() ([]byte, error) {
				_, p, err := conn.ReadMessage()
				if errors.Is(err, websocket.ErrReadLimit) {
					err = ErrPayloadTooLarge
				}
				return p, err
			},
			close: func() {},
		}, nil
	}
	// A compressed stream: every message feeds one decompression context,
	// and a gateway payload may span messages. A goroutine copies messages
	// into a pipe that the decompressor reads; a JSON decoder cuts the
	// inflated stream into payloads.
	pr, pw := io.Pipe()
	go func() {
		for {
			_, p, err := conn.ReadMessage()
			if err != nil {
				_ = pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(p); err != nil {
				return
			}
		}
	}()
	var (
		inflated io.Reader
		release  = func() {}
	)
	switch c {
	case CompressZlib:
		inflated = &lazyZlib{src: pr}
	case CompressZstd:
		d, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			_ = pr.Close()
			return nil, fmt.Errorf("zstd: %w", err)
		}
		inflated, release = d, d.Close
	default:
		_ = pr.Close()
		return nil, fmt.Errorf("%w %q", ErrUnknownCompression, c)
	}
	counted := &countingReader{r: inflated}
	dec := json.NewDecoder(counted)
	counted.limit = func() int64 { return dec.InputOffset() + maxPayload }
	return &payloadReader{
		next: func() ([]byte, error) {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				if errors.Is(err, websocket.ErrReadLimit) {
					err = ErrPayloadTooLarge
				}
				return nil, err
			}
			return raw, nil
		},
		close: func() {
			_ = pr.Close()
			release()
		},
	}, nil
}

// countingReader fails with ErrPayloadTooLarge once more than limit()
// bytes were read: the JSON decoder buffers one payload at a time, so
// bounding what was read beyond what it consumed bounds that payload.
type countingReader struct {
	r     io.Reader
	n     int64
	limit func() int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	room := c.limit() - c.n
	if room <= 0 {
		return 0, ErrPayloadTooLarge
	}
	if int64(len(p)) > room {
		p = p[:room]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// lazyZlib opens the zlib reader on first read, since reading the zlib
// header blocks until the first message arrives.
type lazyZlib struct {
	src io.Reader
	r   io.ReadCloser
}

func (z *lazyZlib) Read(p []byte) (int, error) {
	if z.r == nil {
		r, err := zlib.NewReader(z.src)
		if err != nil {
			return 0, fmt.Errorf("zlib-stream: %w", err)
		}
		z.r = r
	}
	return z.r.Read(p)
}
