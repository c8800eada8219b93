package redis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A reader's own connection speaks just enough RESP2 for its commands
// (readconn.go), so that an XREADGROUP reply is parsed straight into
// entries: the payloads land in a few large buffers instead of a map and
// two strings per entry that a general client builds and the consumer
// copies again. Every length read is checked against what may follow, and
// buffers grow only as bytes arrive.

// respError is an error reply from the server. It satisfies go-redis's
// Error interface, so callers that look for a Redis error find it.
type respError string

func (e respError) Error() string { return string(e) }

// RedisError marks respError as a reply from Redis (go-redis's Error).
func (e respError) RedisError() {}

// errRESPProtocol is wrapped by every error about a reply that is not
// valid RESP2 or not the shape the command answers with.
var errRESPProtocol = errors.New("redis: malformed reply")

const (
	// maxBulkLen is Redis's own bound on a bulk string (proto-max-bulk-len).
	maxBulkLen = 512 << 20
	// maxArrayLen bounds an array's announced length; the elements are
	// read one at a time, so this only rejects absurd headers early.
	maxArrayLen = 1 << 24
	// arenaChunk is the size of the buffers bulk strings share (Go's
	// largest small allocation: larger ones cost a span each); a bulk
	// string above arenaSolo gets a buffer of its own.
	arenaChunk = 32 << 10
	arenaSolo  = 16 << 10
)

// arena hands out byte slices cut from shared chunks. A slice's capacity
// ends where it ends, so appending to one never touches its neighbours.
type arena struct{ buf []byte }

// take returns n bytes (uninitialised) for n up to arenaSolo.
func (a *arena) take(n int) []byte {
	if len(a.buf)+n > cap(a.buf) {
		a.buf = make([]byte, 0, arenaChunk)
	}
	i := len(a.buf)
	a.buf = a.buf[:i+n]
	return a.buf[i : i+n : i+n]
}

// respReader reads RESP2 replies.
type respReader struct {
	br      *bufio.Reader
	scratch []byte
	// ids and idEnds gather a reply's entry ids (streams), which then
	// become one string that every entry's id is cut from: one allocation
	// per read, not one per entry.
	ids    []byte
	idEnds []int
}

func newRESPReader(r io.Reader, size int) *respReader {
	return &respReader{br: bufio.NewReaderSize(r, size)}
}

// line reads one line without its CRLF. It is valid until the next read.
func (rr *respReader) line() ([]byte, error) {
	b, err := rr.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line longer than %d bytes", errRESPProtocol, rr.br.Size())
		}
		return nil, err
	}
	if len(b) < 3 || b[len(b)-2] != '\r' {
		return nil, fmt.Errorf("%w: line %q", errRESPProtocol, b)
	}
	return b[:len(b)-2], nil
}

// parseLen reads a decimal length, -1 included.
func parseLen(b []byte, limit int) (int, error) {
	if len(b) == 2 && b[0] == '-' && b[1] == '1' {
		return -1, nil
	}
	if len(b) == 0 || len(b) > 10 {
		return 0, fmt.Errorf("%w: length %q", errRESPProtocol, b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: length %q", errRESPProtocol, b)
		}
		n = n*10 + int(c-'0')
	}
	if n > limit {
		return 0, fmt.Errorf("%w: length %d above %d", errRESPProtocol, n, limit)
	}
	return n, nil
}

// header reads a reply's first line: its type byte and the rest. An error
// reply is returned as a respError.
func (rr *respReader) header() (byte, []byte, error) {
	b, err := rr.line()
	if err != nil {
		return 0, nil, err
	}
	if b[0] == '-' {
		return 0, nil, respError(b[1:])
	}
	return b[0], b[1:], nil
}

// arrayLen reads an array header: its length, -1 for a null array.
func (rr *respReader) arrayLen() (int, error) {
	t, rest, err := rr.header()
	if err != nil {
		return 0, err
	}
	if t != '*' {
		return 0, fmt.Errorf("%w: want an array, got %q", errRESPProtocol, t)
	}
	return parseLen(rest, maxArrayLen)
}

// bulkLen reads a bulk string's header: its length, -1 for a null one.
func (rr *respReader) bulkLen() (int, error) {
	t, rest, err := rr.header()
	if err != nil {
		return 0, err
	}
	if t != '$' {
		return 0, fmt.Errorf("%w: want a bulk string, got %q", errRESPProtocol, t)
	}
	return parseLen(rest, maxBulkLen)
}

// body reads n bytes and the CRLF after them into dst, growing a buffer
// of its own as the bytes arrive when dst is nil.
func (rr *respReader) body(n int, dst []byte) ([]byte, error) {
	if dst == nil {
		// Large: grow with what arrived, never by what was announced.
		dst = make([]byte, 0, min(n, arenaChunk))
		for len(dst) < n {
			if len(dst) == cap(dst) {
				dst = append(dst, 0)[:len(dst)]
			}
			k, err := rr.br.Read(dst[len(dst):min(cap(dst), n)])
			dst = dst[:len(dst)+k]
			if err != nil {
				return nil, noEOF(err)
			}
		}
	} else if _, err := io.ReadFull(rr.br, dst); err != nil {
		return nil, noEOF(err)
	}
	// Peek, not a read into a local array: that would escape to the heap.
	crlf, err := rr.br.Peek(2)
	if err != nil {
		return nil, noEOF(err)
	}
	if crlf[0] != '\r' || crlf[1] != '\n' {
		return nil, fmt.Errorf("%w: bulk string not followed by CRLF", errRESPProtocol)
	}
	_, _ = rr.br.Discard(2)
	return dst, nil
}

// noEOF turns an end of stream inside a reply into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bulk reads a bulk string into a, or into a buffer of its own when it is
// large; nil for a null one.
func (rr *respReader) bulk(a *arena) ([]byte, error) {
	n, err := rr.bulkLen()
	if err != nil || n < 0 {
		return nil, err
	}
	if n > arenaSolo {
		return rr.body(n, nil)
	}
	return rr.body(n, a.take(n))
}

// bulkScratch reads a bulk string into a buffer valid until the next
// call; nil for a null one.
func (rr *respReader) bulkScratch() ([]byte, error) {
	n, err := rr.bulkLen()
	if err != nil || n < 0 {
		return nil, err
	}
	if n > arenaSolo {
		return rr.body(n, nil)
	}
	if cap(rr.scratch) < n {
		rr.scratch = make([]byte, n)
	}
	return rr.body(n, rr.scratch[:n])
}

// integer reads an integer reply.
func (rr *respReader) integer() (int64, error) {
	t, rest, err := rr.header()
	if err != nil {
		return 0, err
	}
	if t != ':' {
		return 0, fmt.Errorf("%w: want an integer, got %q", errRESPProtocol, t)
	}
	n, err := strconv.ParseInt(string(rest), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: integer %q", errRESPProtocol, rest)
	}
	return n, nil
}

// status reads a simple-string reply, such as OK.
func (rr *respReader) status() (string, error) {
	t, rest, err := rr.header()
	if err != nil {
		return "", err
	}
	if t != '+' {
		return "", fmt.Errorf("%w: want a status, got %q", errRESPProtocol, t)
	}
	return string(rest), nil
}

// entry is one stream entry as a reader delivers it.
type entry struct {
	stream  string
	id      string
	raw     []byte            // the data field
	headers map[string]string // the other fields
	deleted bool              // the entry was deleted from the stream
}

// streams reads an XREADGROUP reply (RESP2) into entries, appended to
// dst. known are the stream names read, reused instead of allocated. A
// null reply (nothing to read) returns dst unchanged.
func (rr *respReader) streams(dst []entry, a *arena, known []string) ([]entry, error) {
	first := len(dst)
	rr.ids, rr.idEnds = rr.ids[:0], rr.idEnds[:0]
	dst, err := rr.streamEntries(dst, a, known)
	// After an error the last id read may belong to no entry.
	if ends := rr.idEnds[:len(dst)-first]; len(ends) > 0 {
		ids, start := string(rr.ids[:ends[len(ends)-1]]), 0
		for i, end := range ends {
			dst[first+i].id = ids[start:end]
			start = end
		}
	}
	if cap(rr.ids) > arenaChunk {
		rr.ids, rr.idEnds = nil, nil // after a huge read: not kept
	}
	return dst, err
}

// streamEntries is streams but for the entries' ids, which it gathers in
// rr.ids.
func (rr *respReader) streamEntries(dst []entry, a *arena, known []string) ([]entry, error) {
	n, err := rr.arrayLen()
	if err != nil {
		return dst, err
	}
	for range n {
		if k, err := rr.arrayLen(); err != nil {
			return dst, err
		} else if k != 2 {
			return dst, fmt.Errorf("%w: a stream is an array of %d, not 2", errRESPProtocol, k)
		}
		name, err := rr.bulkScratch()
		if err != nil {
			return dst, err
		}
		stream := ""
		for _, s := range known {
			if s == string(name) {
				stream = s
				break
			}
		}
		if stream == "" {
			stream = string(name)
		}
		msgs, err := rr.arrayLen()
		if err != nil {
			return dst, err
		}
		for range msgs {
			e, err := rr.entry(stream, a)
			if err != nil {
				return dst, err
			}
			dst = append(dst, e)
		}
	}
	return dst, nil
}

// entry reads one [id, [field, value, ...]] element. Its id is appended
// to rr.ids (see streams), not set.
func (rr *respReader) entry(stream string, a *arena) (entry, error) {
	if k, err := rr.arrayLen(); err != nil {
		return entry{}, err
	} else if k != 2 {
		return entry{}, fmt.Errorf("%w: an entry is an array of %d, not 2", errRESPProtocol, k)
	}
	id, err := rr.bulkScratch()
	if err != nil {
		return entry{}, err
	}
	rr.ids = append(rr.ids, id...)
	rr.idEnds = append(rr.idEnds, len(rr.ids))
	e := entry{stream: stream}
	fields, err := rr.arrayLen()
	if err != nil {
		return entry{}, err
	}
	if fields < 0 {
		e.deleted = true
		return e, nil
	}
	if fields%2 != 0 {
		return entry{}, fmt.Errorf("%w: an entry has %d field names and values", errRESPProtocol, fields)
	}
	for range fields / 2 {
		name, err := rr.bulkScratch()
		if err != nil {
			return entry{}, err
		}
		if string(name) == dataField && e.raw == nil {
			v, err := rr.bulk(a)
			if err != nil {
				return entry{}, err
			}
			if v == nil {
				v = []byte{}
			}
			e.raw = v
			continue
		}
		key := string(name)
		v, err := rr.bulkScratch()
		if err != nil {
			return entry{}, err
		}
		if e.headers == nil {
			e.headers = make(map[string]string, 1)
		}
		e.headers[key] = string(v)
	}
	return e, nil
}

// appendCommand appends a command in RESP2 to b.
func appendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = appendBulk(b, a)
	}
	return b
}

// appendBulk appends one bulk string holding s to b.
func appendBulk[T string | []byte](b []byte, s T) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// appendArrayHeader appends an array header of n elements to b.
func appendArrayHeader(b []byte, n int) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}
