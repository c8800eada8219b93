package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spectacles-go/spectacles/core"
)

// IsPacketEvent reports whether event is one a gateway consumes from
// workers: SEND, or a shard id in decimal ("0", "3"), as the gateway
// names its shards' events.
func IsPacketEvent(event string) bool {
	if event == SendEvent {
		return true
	}
	n, err := strconv.Atoi(event)
	return err == nil && n >= 0 && strconv.Itoa(n) == event
}

// EncodePacket returns the data to publish under event. For a packet
// event (IsPacketEvent: SEND {guild_id, packet} or a shard's {op, d}) it is
// the JSON text of data as core.LegacyJSON, which the msgpack codec writes
// as a msgpack str holding the JSON: the only form spec-tacles/gateway
// reads, and one this gateway reads too. Other events' data is returned
// unchanged. Every publisher of worker packets (the send and publish
// commands, the console) goes through it.
func EncodePacket(event string, data any) (any, error) {
	if !IsPacketEvent(event) {
		return data, nil
	}
	switch d := data.(type) {
	case core.LegacyJSON:
		return d, nil
	case core.Raw:
		return data, nil // already encoded by the caller
	case json.RawMessage:
		if !json.Valid(d) {
			return nil, fmt.Errorf("%s packet: invalid JSON", event)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, d); err != nil {
			return nil, fmt.Errorf("%s packet: %w", event, err)
		}
		return core.LegacyJSON(buf.Bytes()), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(core.JSONValue(data)); err != nil {
		return nil, fmt.Errorf("%s packet: %w", event, err)
	}
	return core.LegacyJSON(bytes.TrimRight(buf.Bytes(), "\n")), nil
}
