package gateway

import (
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

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

// frameReader yields websocket messages.
type frameReader interface {
	ReadMessage() (messageType int, p []byte, err error)
}

// payloadReader yields one gateway payload's JSON text at a time from a
// connection's messages, inflating a compressed stream. One per connection:
// compression contexts span the whole connection.
type payloadReader struct {
	next  func() ([]byte, error)
	close func()
}

func newPayloadReader(conn frameReader, c Compression) (*payloadReader, error) {
	if c == CompressNone || c == "" {
		return &payloadReader{
			next: func() ([]byte, error) {
				_, p, err := conn.ReadMessage()
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
	dec := json.NewDecoder(inflated)
	return &payloadReader{
		next: func() ([]byte, error) {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
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
