package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/internal/jsonscan"
)

// errPayloadField is wrapped by parsePayload's errors for a known field of
// the wrong type.
var errPayloadField = errors.New("gateway payload field")

// parsePayload cuts a gateway payload into op, t, s and the raw d in one
// validating pass over its bytes (internal/jsonscan), where json.Unmarshal
// into a discord.Payload validated the whole text, scanned it again to
// decode and copied d. D is a slice of raw, not a copy. Keys match exactly
// (Discord writes them in lower case); of a repeated key the last counts;
// null leaves op 0, s nil and t empty, as json.Unmarshal does.
func parsePayload(raw []byte) (discord.Payload, error) {
	var p payloadFields
	err := jsonscan.Object(raw, p.field)
	return discord.Payload(p), err
}

// parsePayloadPrefix is parsePayload for the payload that starts b,
// whatever follows it: it returns the payload and the offset just past
// it. Text that ends before the payload does is an error (jsonscan.ObjectPrefix).
func parsePayloadPrefix(b []byte) (discord.Payload, int, error) {
	var p payloadFields
	end, err := jsonscan.ObjectPrefix(b, p.field)
	return discord.Payload(p), end, err
}

// payloadFields collects a payload's op, t, s and d, one member at a time.
type payloadFields discord.Payload

// field takes one member of a payload's object (jsonscan.Object's field).
func (p *payloadFields) field(key []byte, escaped bool, v []byte) error {
	name := string(key) // on the stack: it does not escape
	if escaped {
		var err error
		if name, err = jsonscan.Key(key, true); err != nil {
			return err
		}
	}
	switch name {
	case "op":
		if isNull(v) {
			return nil
		}
		op, err := strconv.Atoi(string(v))
		if err != nil {
			return fmt.Errorf("%w op: %s is not an integer", errPayloadField, clip(v))
		}
		p.Op = op
	case "s":
		if isNull(v) {
			p.S = nil
			return nil
		}
		s, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return fmt.Errorf("%w s: %s is not an integer", errPayloadField, clip(v))
		}
		p.S = &s
	case "t":
		if isNull(v) {
			return nil
		}
		if v[0] != '"' {
			return fmt.Errorf("%w t: %s is not a string", errPayloadField, clip(v))
		}
		t, err := jsonscan.StringValue(v, hasBackslash(v))
		if err != nil {
			return fmt.Errorf("%w t: %w", errPayloadField, err)
		}
		p.T = t
	case "d":
		p.D = v
	}
	return nil
}

// parseGuildRef reads a guild's id and availability from the d of
// GUILD_CREATE or GUILD_DELETE in one pass.
func parseGuildRef(d []byte) (guildRef, error) {
	var g guildRef
	err := jsonscan.Object(d, func(key []byte, escaped bool, v []byte) error {
		switch {
		case jsonscan.KeyIs(key, escaped, "id"):
			if v[0] != '"' {
				return fmt.Errorf("%w id: not a string", errPayloadField)
			}
			id, err := jsonscan.StringValue(v, hasBackslash(v))
			if err != nil {
				return err
			}
			g.ID = id
		case jsonscan.KeyIs(key, escaped, "unavailable"):
			switch string(v) {
			case "true":
				g.Unavailable = true
			case "false", "null":
				g.Unavailable = false
			default:
				return fmt.Errorf("%w unavailable: not a boolean", errPayloadField)
			}
		}
		return nil
	})
	return g, err
}

func isNull(v []byte) bool { return string(v) == "null" }

func hasBackslash(v []byte) bool { return bytes.IndexByte(v, '\\') >= 0 }

// clip shortens a value for an error message.
func clip(v []byte) string {
	if len(v) > 32 {
		return string(v[:32]) + "…"
	}
	return string(v)
}
