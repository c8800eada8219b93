package discord

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestValidatePacket(t *testing.T) {
	good := []string{
		`{"op":4,"d":{"guild_id":"1","channel_id":null}}`,
		`{"op":8,"d":{"guild_id":"1","query":"","limit":0}}`,
		`{"op":3,"d":{"status":"online"}}`,
	}
	for _, p := range good {
		if _, err := ValidatePacket([]byte(p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	bad := map[string]string{
		`{"op":2,"d":{"token":"x"}}`: "op 2 may not be sent",
		`{"op":6,"d":{}}`:            "op 6 may not be sent",
		`{"op":1,"d":null}`:          "op 1 may not be sent",
		`{"d":{}}`:                   "no op",
		`not json`:                   "not a JSON object",
		`{"op":4,"d":"` + strings.Repeat("x", 4096) + `"}`: "more than Discord's 4096",
	}
	for p, want := range bad {
		_, err := ValidatePacket([]byte(p))
		if !errors.Is(err, ErrInvalidPacket) || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40s: err = %v, want %q", p, err, want)
		}
	}
}

// TestWorkerOpcodes: a worker may send exactly ops 3, 4, 8, 31 and 43, each
// passes ValidatePacket with its op returned, the refusal names them all,
// and a caller changing the returned list changes nothing.
func TestWorkerOpcodes(t *testing.T) {
	want := []int{3, 4, 8, 31, 43}
	got := WorkerOpcodes()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("WorkerOpcodes() = %v, want %v", got, want)
	}
	got[0] = OpIdentify
	if WorkerOpcodes()[0] != OpPresenceUpdate {
		t.Fatal("changing the returned list changed WorkerOpcodes")
	}
	for _, op := range want {
		p := fmt.Sprintf(`{"op":%d,"d":{}}`, op)
		if gotOp, err := ValidatePacket([]byte(p)); err != nil || gotOp != op {
			t.Errorf("%s: op %d, err %v", p, gotOp, err)
		}
	}
	_, err := ValidatePacket([]byte(`{"op":2,"d":{}}`))
	for _, s := range []string{"3 presence update", "4 voice state update", "8 request guild members", "31 request soundboard sounds", "43 request channel info"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("refusal %v does not name %q", err, s)
		}
	}
	if n := OpName(99); n != "op 99" {
		t.Errorf("OpName(99) = %q", n)
	}
}

// TestValidatePacketAtTheLimit: exactly MaxPayloadBytes is accepted.
func TestValidatePacketAtTheLimit(t *testing.T) {
	head, tail := `{"op":3,"d":"`, `"}`
	p := head + strings.Repeat("x", MaxPayloadBytes-len(head)-len(tail)) + tail
	if len(p) != MaxPayloadBytes {
		t.Fatalf("test packet is %d bytes", len(p))
	}
	if _, err := ValidatePacket([]byte(p)); err != nil {
		t.Errorf("%d bytes: %v", len(p), err)
	}
	if _, err := ValidatePacket([]byte(p[:len(p)-2] + `x"}`)); !errors.Is(err, ErrInvalidPacket) {
		t.Errorf("%d bytes: err = %v", len(p)+1, err)
	}
}
