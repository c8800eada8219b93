package discord

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MaxPayloadBytes is the largest payload Discord accepts from a client.
const MaxPayloadBytes = 4096

// ErrInvalidPacket is wrapped by ValidatePacket's errors.
var ErrInvalidPacket = errors.New("invalid packet")

// ValidatePacket checks a packet a worker wants sent: a JSON object with an
// op a worker may send (WorkerOpcodes), at most MaxPayloadBytes long. It
// returns the op.
func ValidatePacket(packet []byte) (int, error) {
	if len(packet) > MaxPayloadBytes {
		return 0, fmt.Errorf("%w: %d bytes, more than Discord's %d", ErrInvalidPacket, len(packet), MaxPayloadBytes)
	}
	var p struct {
		Op *int            `json:"op"`
		D  json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(packet, &p); err != nil {
		return 0, fmt.Errorf("%w: not a JSON object: %v", ErrInvalidPacket, err)
	}
	if p.Op == nil {
		return 0, fmt.Errorf("%w: no op", ErrInvalidPacket)
	}
	if ops := WorkerOpcodes(); !slices.Contains(ops, *p.Op) {
		names := make([]string, len(ops))
		for i, op := range ops {
			names[i] = fmt.Sprintf("%d %s", op, OpName(op))
		}
		return *p.Op, fmt.Errorf("%w: op %d may not be sent by a worker (allowed: %s)", ErrInvalidPacket, *p.Op, strings.Join(names, ", "))
	}
	return *p.Op, nil
}
