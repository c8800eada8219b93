package ipc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The Msgpack format needs to find where one value ends in a stream that
// has no framing, to cut the "data" value out of an envelope as it was
// written, and to step over garbage. msgpackLen does it without decoding.

var (
	// errShort: the bytes end inside the value; more input is needed.
	errShort = errors.New("msgpack value truncated")
	// errInvalid: the bytes are not msgpack (the never-used code 0xc1).
	errInvalid = errors.New("not msgpack")
	// errTooLarge: the value declares more than the allowed size.
	errTooLarge = errors.New("msgpack value too large")
)

// msgpackLen returns the length in bytes of the msgpack value that starts
// b. Values that would be longer than limit bytes are errTooLarge, even
// when b is shorter than that: the caller need not read them.
func msgpackLen(b []byte, limit int) (int, error) {
	var s msgpackScan
	return s.scan(b, limit)
}

// msgpackScan finds where a msgpack value ends in input that arrives in
// pieces: after errShort, scan called again with more of the same input
// goes on where it stopped instead of starting over, so that reading a
// value costs O(its length) however it is cut (rescanning from the start
// on every read made a 64 MiB value cost minutes). The zero value starts
// at the beginning of a value.
type msgpackScan struct {
	off       int // where the next header starts
	remaining int // values still to read, minus one
}

// scan returns the length of the value that starts b, as msgpackLen does.
// After errShort, b must be the same input, possibly longer.
func (s *msgpackScan) scan(b []byte, limit int) (int, error) {
	off := s.off
	remaining := s.remaining + 1 // values still to read
	for remaining > 0 {
		// Should this value be cut short, the next scan starts at it.
		s.off, s.remaining = off, remaining-1
		if off >= len(b) {
			return 0, errShort
		}
		c := b[off]
		off++
		remaining--
		var (
			size     int // bytes of content after the header
			children int // values nested in this one
			lenBytes int // bytes of the length or count that follows c
			extra    int // fixed bytes between the length and the content
			isCount  bool
			perCount = 1
		)
		switch {
		case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		case c <= 0x8f: // fixmap
			children = 2 * int(c&0x0f)
		case c <= 0x9f: // fixarray
			children = int(c & 0x0f)
		case c <= 0xbf: // fixstr
			size = int(c & 0x1f)
		case c == 0xc1: // never used
			return 0, errInvalid
		case c >= 0xc4 && c <= 0xc6: // bin8, bin16, bin32
			lenBytes = 1 << (c - 0xc4)
		case c >= 0xc7 && c <= 0xc9: // ext8, ext16, ext32
			lenBytes, extra = 1<<(c-0xc7), 1
		case c == 0xca: // float32
			size = 4
		case c == 0xcb: // float64
			size = 8
		case c >= 0xcc && c <= 0xcf: // uint8 to uint64
			size = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3: // int8 to int64
			size = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8: // fixext1 to fixext16: a type byte and the data
			size = 1 + 1<<(c-0xd4)
		case c >= 0xd9 && c <= 0xdb: // str8, str16, str32
			lenBytes = 1 << (c - 0xd9)
		case c == 0xdc || c == 0xdd: // array16, array32
			lenBytes, isCount = 2<<(c-0xdc), true
		case c == 0xde || c == 0xdf: // map16, map32
			lenBytes, isCount, perCount = 2<<(c-0xde), true, 2
		}
		if lenBytes > 0 {
			if off+lenBytes > len(b) {
				return 0, errShort
			}
			var n uint64
			switch lenBytes {
			case 1:
				n = uint64(b[off])
			case 2:
				n = uint64(binary.BigEndian.Uint16(b[off:]))
			case 4:
				n = uint64(binary.BigEndian.Uint32(b[off:]))
			}
			off += lenBytes
			if n > uint64(limit) {
				return 0, errTooLarge
			}
			if isCount {
				children = int(n) * perCount
			} else {
				size = int(n) + extra
			}
		}
		// Every nested value takes at least one byte.
		if off+size > limit || off+size+remaining+children > limit {
			return 0, errTooLarge
		}
		if off+size > len(b) {
			return 0, errShort
		}
		off += size
		remaining += children
	}
	*s = msgpackScan{}
	return off, nil
}

// Encoding. Strings use fixstr, str16 or str32 and never str8, as
// spec-tacles/gateway writes them, so that decoders of the old msgpack
// spec read them.

func appendMsgpackStr(dst []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint16:
		dst = append(dst, 0xda, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, s...)
}

func appendMsgpackBin(dst, p []byte) []byte {
	n := len(p)
	switch {
	case n <= math.MaxUint8:
		dst = append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		dst = append(dst, 0xc5, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, p...)
}

func appendMsgpackMapHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(dst, 0xde, byte(n>>8), byte(n))
	default:
		return append(dst, 0xdf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// Decoding of the few types an envelope holds.

// msgpackMapLen reads a map header.
func msgpackMapLen(b []byte) (n, hdr int, err error) {
	if len(b) == 0 {
		return 0, 0, errShort
	}
	c := b[0]
	switch {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), 1, nil
	case c == 0xde && len(b) >= 3:
		return int(binary.BigEndian.Uint16(b[1:])), 3, nil
	case c == 0xdf && len(b) >= 5:
		return int(binary.BigEndian.Uint32(b[1:])), 5, nil
	}
	return 0, 0, fmt.Errorf("not a map (code 0x%02x)", c)
}

// msgpackBytes returns the content of the str or bin value v (a whole
// value, as msgpackLen cut it), and false for any other type.
func msgpackBytes(v []byte) ([]byte, bool) {
	if len(v) == 0 {
		return nil, false
	}
	c := v[0]
	var hdr int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		hdr = 1
	case c == 0xc4 || c == 0xd9:
		hdr = 2
	case c == 0xc5 || c == 0xda:
		hdr = 3
	case c == 0xc6 || c == 0xdb:
		hdr = 5
	default:
		return nil, false
	}
	if len(v) < hdr {
		return nil, false
	}
	return v[hdr:], true
}
