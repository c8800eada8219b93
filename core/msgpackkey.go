package core

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// Map keys that are arrays or maps become text written straight from their
// bytes. Decoding them as values and printing those would print the key of
// an inner map again inside the key of every map around it: maps nested as
// keys 1000 deep cost megabytes for 2 KB of input.

// appendMsgpackText appends the JSON-like text of the whole msgpack value
// b (checked by checkMsgpack) and returns the bytes after it. Strings are
// quoted as JSON; binary is a quoted string (base64 when not UTF-8); map
// keys that are not strings are written unquoted; an extension is written
// as {"ext":type,"data":"base64"}.
func appendMsgpackText(dst, b []byte) ([]byte, []byte) {
	if len(b) == 0 {
		return dst, b
	}
	c := b[0]
	switch {
	case c <= 0x7f:
		return strconv.AppendInt(dst, int64(c), 10), b[1:]
	case c >= 0xe0:
		return strconv.AppendInt(dst, int64(int8(c)), 10), b[1:]
	case c <= 0x8f:
		return appendMsgpackMapText(dst, b[1:], int(c&0x0f))
	case c <= 0x9f:
		return appendMsgpackArrayText(dst, b[1:], int(c&0x0f))
	case c <= 0xbf:
		n := int(c & 0x1f)
		return appendQuoted(dst, b[1:1+n]), b[1+n:]
	}
	switch c {
	case 0xc0:
		return append(dst, "null"...), b[1:]
	case 0xc2:
		return append(dst, "false"...), b[1:]
	case 0xc3:
		return append(dst, "true"...), b[1:]
	case 0xc4, 0xd9:
		n := int(b[1])
		return appendQuoted(dst, b[2:2+n]), b[2+n:]
	case 0xc5, 0xda:
		n := int(binary.BigEndian.Uint16(b[1:]))
		return appendQuoted(dst, b[3:3+n]), b[3+n:]
	case 0xc6, 0xdb:
		n := int(binary.BigEndian.Uint32(b[1:]))
		return appendQuoted(dst, b[5:5+n]), b[5+n:]
	case 0xc7:
		n := int(b[1])
		return appendExtText(dst, int8(b[2]), b[3:3+n]), b[3+n:]
	case 0xc8:
		n := int(binary.BigEndian.Uint16(b[1:]))
		return appendExtText(dst, int8(b[3]), b[4:4+n]), b[4+n:]
	case 0xc9:
		n := int(binary.BigEndian.Uint32(b[1:]))
		return appendExtText(dst, int8(b[5]), b[6:6+n]), b[6+n:]
	case 0xca:
		return strconv.AppendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(b[1:]))), 'g', -1, 32), b[5:]
	case 0xcb:
		return strconv.AppendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(b[1:])), 'g', -1, 64), b[9:]
	case 0xcc:
		return strconv.AppendUint(dst, uint64(b[1]), 10), b[2:]
	case 0xcd:
		return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(b[1:])), 10), b[3:]
	case 0xce:
		return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(b[1:])), 10), b[5:]
	case 0xcf:
		return strconv.AppendUint(dst, binary.BigEndian.Uint64(b[1:]), 10), b[9:]
	case 0xd0:
		return strconv.AppendInt(dst, int64(int8(b[1])), 10), b[2:]
	case 0xd1:
		return strconv.AppendInt(dst, int64(int16(binary.BigEndian.Uint16(b[1:]))), 10), b[3:]
	case 0xd2:
		return strconv.AppendInt(dst, int64(int32(binary.BigEndian.Uint32(b[1:]))), 10), b[5:]
	case 0xd3:
		return strconv.AppendInt(dst, int64(binary.BigEndian.Uint64(b[1:])), 10), b[9:]
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		n := 1 << (c - 0xd4)
		return appendExtText(dst, int8(b[1]), b[2:2+n]), b[2+n:]
	case 0xdc:
		return appendMsgpackArrayText(dst, b[3:], int(binary.BigEndian.Uint16(b[1:])))
	case 0xdd:
		return appendMsgpackArrayText(dst, b[5:], int(binary.BigEndian.Uint32(b[1:])))
	case 0xde:
		return appendMsgpackMapText(dst, b[3:], int(binary.BigEndian.Uint16(b[1:])))
	case 0xdf:
		return appendMsgpackMapText(dst, b[5:], int(binary.BigEndian.Uint32(b[1:])))
	}
	return dst, b[1:] // 0xc1: not in checked input
}

func appendMsgpackArrayText(dst, b []byte, n int) ([]byte, []byte) {
	dst = append(dst, '[')
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst, b = appendMsgpackText(dst, b)
	}
	return append(dst, ']'), b
}

func appendMsgpackMapText(dst, b []byte, n int) ([]byte, []byte) {
	dst = append(dst, '{')
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst, b = appendMsgpackText(dst, b)
		dst = append(dst, ':')
		dst, b = appendMsgpackText(dst, b)
	}
	return append(dst, '}'), b
}

// appendQuoted appends s as a JSON string, or its base64 in quotes when it
// is not UTF-8.
func appendQuoted(dst, s []byte) []byte {
	if !utf8.Valid(s) {
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, s)
		return append(dst, '"')
	}
	q, _ := json.Marshal(string(s)) // a string always encodes
	return append(dst, q...)
}

func appendExtText(dst []byte, typ int8, data []byte) []byte {
	dst = append(dst, `{"ext":`...)
	dst = strconv.AppendInt(dst, int64(typ), 10)
	dst = append(dst, `,"data":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, data)
	return append(dst, `"}`...)
}
