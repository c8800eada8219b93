package core

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errTooDeep marks a payload nested deeper than MaxDepth.
var errTooDeep = errors.New("nesting too deep")

// MaxDepth is how deeply arrays and maps (msgpack) or arrays and objects
// (JSON given by the user) may nest in a payload. Decoding is recursive, so
// the bound keeps the stack of a decoding goroutine small whatever a peer
// sends. Real payloads nest a few levels.
const MaxDepth = 1000

// checkMsgpack walks the msgpack value that must fill b, without decoding
// or allocating, before the msgpack library sees it: the library
// preallocates arrays, maps, strings and binaries as large as their headers
// declare, so a 5-byte header could claim gigabytes. Every declared length
// is checked against the bytes that remain (an array element takes at
// least 1 byte, a map entry 2, and so do the values still owed by the
// containers already open), and nesting is bounded by MaxDepth. A value
// that passes can be decoded with allocations proportional to len(b).
//
// The walk is iterative; the error names what is wrong and its offset.
func checkMsgpack(b []byte) error {
	var stackBuf [32]int
	// open holds, for each open array or map (innermost last), how many
	// values it still owes.
	open := stackBuf[:0]
	owed := 1 // values still owed in all: the root, then the open containers'
	off := 0
	for owed > 0 {
		if off >= len(b) {
			return fmt.Errorf("truncated: the data ends at offset %d, where %d more values were expected", off, owed)
		}
		start := off
		c := b[off]
		off++
		owed--
		if len(open) > 0 {
			open[len(open)-1]--
		}
		var (
			kind     string // for the error messages
			size     int    // bytes of content after the header
			lenBytes int    // bytes of the length or count that follows c
			extra    int    // bytes of content besides the declared length (ext type)
			children uint64 // values nested in this one
			isCount  bool   // the length counts values, not bytes
			perEntry uint64 = 1
		)
		switch {
		case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		case c <= 0x8f: // fixmap
			kind, children, perEntry = "map", uint64(c&0x0f), 2
		case c <= 0x9f: // fixarray
			kind, children = "array", uint64(c&0x0f)
		case c <= 0xbf: // fixstr
			kind, size = "str", int(c&0x1f)
		default:
			switch c {
			case 0xc0, 0xc2, 0xc3: // nil, false, true
			case 0xc1:
				return fmt.Errorf("byte 0xc1 at offset %d is not a msgpack type", start)
			case 0xc4, 0xc5, 0xc6: // bin8, bin16, bin32
				kind, lenBytes = "bin", 1<<(c-0xc4)
			case 0xd9, 0xda, 0xdb: // str8, str16, str32
				kind, lenBytes = "str", 1<<(c-0xd9)
			case 0xc7, 0xc8, 0xc9: // ext8, ext16, ext32
				kind, lenBytes, extra = "ext", 1<<(c-0xc7), 1
			case 0xca, 0xce, 0xd2: // float32, uint32, int32
				kind, size = "number", 4
			case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
				kind, size = "number", 8
			case 0xcc, 0xd0: // uint8, int8
				kind, size = "number", 1
			case 0xcd, 0xd1: // uint16, int16
				kind, size = "number", 2
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 (+ the type byte)
				kind, size = "ext", 1+1<<(c-0xd4)
			case 0xdc, 0xdd: // array16, array32
				kind, lenBytes, isCount = "array", 2<<(c-0xdc), true
			case 0xde, 0xdf: // map16, map32
				kind, lenBytes, isCount, perEntry = "map", 2<<(c-0xde), true, 2
			}
		}
		if lenBytes > 0 {
			if len(b)-off < lenBytes {
				return fmt.Errorf("truncated: the %s header at offset %d needs %d length bytes, %d remain", kind, start, lenBytes, len(b)-off)
			}
			var n uint64
			switch lenBytes {
			case 1:
				n = uint64(b[off])
			case 2:
				n = uint64(binary.BigEndian.Uint16(b[off:]))
			default:
				n = uint64(binary.BigEndian.Uint32(b[off:]))
			}
			off += lenBytes
			if isCount {
				children = n
			} else {
				// n < 2^32 and extra is 0 or 1: no overflow on 64 bits, and
				// on 32 bits the comparison below is made in uint64.
				if n+uint64(extra) > uint64(len(b)-off) {
					return fmt.Errorf("%s at offset %d declares %d bytes, but only %d remain", kind, start, n, len(b)-off)
				}
				size = int(n) + extra
			}
		}
		if size > len(b)-off {
			return fmt.Errorf("truncated: the %s at offset %d needs %d bytes, %d remain", kind, start, size, len(b)-off)
		}
		off += size
		if children == 0 {
			// A complete value: close the containers it completes.
			for len(open) > 0 && open[len(open)-1] == 0 {
				open = open[:len(open)-1]
			}
			continue
		}
		// Every value still owed takes at least one byte of what remains.
		room := uint64(len(b) - off - owed)
		if off+owed > len(b) || children > room/perEntry {
			unit := "elements"
			if perEntry == 2 {
				unit = "entries"
			}
			return fmt.Errorf("%s at offset %d declares %d %s, more than the %d bytes left can hold", kind, start, children, unit, len(b)-off)
		}
		if len(open) >= MaxDepth {
			return fmt.Errorf("%w: %s at offset %d is nested deeper than %d levels", errTooDeep, kind, start, MaxDepth)
		}
		n := int(children * perEntry) // <= room <= len(b)
		open = append(open, n)
		owed += n
	}
	if off != len(b) {
		return fmt.Errorf("%d bytes after the msgpack value that ends at offset %d", len(b)-off, off)
	}
	return nil
}
