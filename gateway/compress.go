package gateway

import (
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zstd"

	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/internal/jsonscan"
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
	// stream cuts a compressed stream (nil without compression); it may
	// have parsed the payload next returned last (parse).
	stream *streamPayloads
}

// parse returns the payload raw, the last that next returned, cut into op,
// t, s and d: parsed already when the stream cut it so, else now
// (parsePayload).
func (r *payloadReader) parse(raw []byte) (discord.Payload, error) {
	if s := r.stream; s != nil && s.parsedOK {
		s.parsedOK = false
		return s.parsed, nil
	}
	return parsePayload(raw)
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
	// and a gateway payload may span messages. The decompressor reads the
	// messages one after the other (messageStream), on the shard's own
	// goroutine; streamPayloads cuts the inflated stream into payloads.
	msgs := newMessageStream(conn)
	var (
		inflated io.Reader
		release  = func() {}
	)
	switch c {
	case CompressZlib:
		inflated = &lazyZlib{src: msgs}
	case CompressZstd:
		d, err := zstd.NewReader(msgs, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		inflated, release = d, d.Close
	default:
		return nil, fmt.Errorf("%w %q", ErrUnknownCompression, c)
	}
	sp := &streamPayloads{r: inflated, max: maxPayload}
	return &payloadReader{
		next:   sp.next,
		close:  release,
		stream: sp,
	}, nil
}

// messageReader yields each websocket message as a reader, as gorilla's
// Conn does: the stream then reads straight from the connection, with no
// buffer per message.
type messageReader interface {
	NextReader() (messageType int, r io.Reader, err error)
}

// messageStream reads a connection's messages as one byte stream, one
// message after the other, for a decompressor: from the connection
// itself when it offers each message as a reader, else from each message
// read whole.
type messageStream struct {
	conn frameReader
	next messageReader // conn's, when it has NextReader
	cur  io.Reader     // the message being read (next), or nil
	rest []byte        // the rest of the message read whole (no next)
}

func newMessageStream(conn frameReader) *messageStream {
	s := &messageStream{conn: conn}
	s.next, _ = conn.(messageReader)
	return s
}

// Read reads from the current message, and from the next one once it is
// read to its end. A connection's error (a close frame, a read past the
// limit) is returned as it is.
func (s *messageStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.next == nil {
		for len(s.rest) == 0 {
			_, m, err := s.conn.ReadMessage()
			if err != nil {
				return 0, err
			}
			s.rest = m
		}
		n := copy(p, s.rest)
		s.rest = s.rest[n:]
		return n, nil
	}
	for {
		if s.cur == nil {
			_, r, err := s.next.NextReader()
			if err != nil {
				return 0, err
			}
			s.cur = r
		}
		n, err := s.cur.Read(p)
		if err == io.EOF {
			s.cur = nil
			if n == 0 {
				continue // an empty message, or its end: the next one
			}
			err = nil
		}
		return n, err
	}
}

// streamPayloads cuts an inflated stream into payloads. Discord ends a
// compressed message where a payload ends, so a read of the inflated
// stream mostly holds whole payloads: the first attempt at each payload
// parses it where it starts (parsePayloadPrefix), which validates it, cuts
// it and finds op, t, s and d in one pass over its bytes. Only a payload
// that goes on past what was read (a large one, or one split over
// messages) falls back to a jsonscan.Splitter that finds its end as more
// arrives, and is parsed once complete (payloadReader.parse). A payload is
// handed over in the buffer it was read into, not copied: the next payload
// starts in a new buffer (with the bytes that followed, if any), sized by
// the last payload.
type streamPayloads struct {
	r     io.Reader
	max   int64
	buf   []byte // the bytes read past the last payload, not yet scanned
	split jsonscan.Splitter
	hint  int // the last payload's size
	// parsed is the payload next returned last, when it cut it by parsing
	// (parsedOK).
	parsed   discord.Payload
	parsedOK bool
}

// minPayloadBuffer is the smallest buffer a payload is read into.
const minPayloadBuffer = 512

func (s *streamPayloads) next() ([]byte, error) {
	buf, scanned := s.buf, 0
	s.buf = nil
	s.parsedOK = false
	// tried is set once the payload was parsed where it starts, or given up
	// on: that is tried once, when a read came back short (the inflater
	// gave all it had, mostly up to the end of a message) or with the bytes
	// left from the last payload. Until then a full read only grows the
	// buffer; after it the Splitter looks at each new byte.
	tried, ready := false, true
	for {
		if !tried && ready && jsonscan.Space(buf, 0) < len(buf) {
			tried = true
			if p, n, err := parsePayloadPrefix(buf); err == nil {
				s.parsed, s.parsedOK = p, true
				return s.cut(buf, n), nil
			}
			// Not all here yet, or not valid: the Splitter finds where it
			// ends, and parse tells what is wrong with it.
		}
		if tried && scanned < len(buf) {
			end, err := s.split.Scan(buf[scanned:])
			if err != nil {
				return nil, fmt.Errorf("undecodable payload stream: %w", err)
			}
			if end >= 0 {
				s.split.Reset()
				return s.cut(buf, scanned+end), nil
			}
			scanned = len(buf)
		}
		if int64(len(buf)) > s.max {
			return nil, ErrPayloadTooLarge
		}
		if len(buf) == cap(buf) {
			// Grow: to the last payload's size first, then doubling; never
			// past the bound (plus one byte, to see that it is crossed).
			size := max(2*cap(buf), s.hint+s.hint/8, minPayloadBuffer)
			size = int(min(int64(size), s.max+1))
			buf = append(make([]byte, 0, size), buf...)
		}
		space := cap(buf) - len(buf)
		n, err := s.r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		ready = n < space
		if err != nil && n == 0 {
			if errors.Is(err, websocket.ErrReadLimit) {
				err = ErrPayloadTooLarge
			}
			return nil, err
		}
	}
}

// cut returns buf's first n bytes, the payload, and keeps what follows for
// the next one.
func (s *streamPayloads) cut(buf []byte, n int) []byte {
	s.hint = n
	if rest := buf[n:]; len(rest) > 0 {
		s.buf = append(make([]byte, 0, max(len(rest), s.hint, minPayloadBuffer)), rest...)
	}
	return buf[:n:n]
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
