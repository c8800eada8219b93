package ipc

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/spectacles-go/spectacles/core"
)

// hostilePayload is an array32 header declaring 4G elements: the msgpack
// library preallocated 64 GiB for it and the process died.
var hostilePayload = []byte{0xdd, 0xff, 0xff, 0xff, 0xff}

// TestHostilePayloadIsUndecodable: a payload whose header declares more
// than it holds reaches the consumer as undecodable, with its bytes, in
// both formats, and the messages after it still arrive.
func TestHostilePayloadIsUndecodable(t *testing.T) {
	for _, f := range []Format{JSONLines, Msgpack} {
		t.Run(f.String(), func(t *testing.T) {
			o := opts(t, "bot", "b")
			o.Concurrency = 1
			b, in := pipeBroker(t, io.Discard, Config{Options: o, Format: f})
			h, got := collect()
			if err := b.Consume(ctxT(t), []string{"PING"}, h); err != nil {
				t.Fatal(err)
			}
			var stream []byte
			if f == JSONLines {
				stream = []byte(`{"event":"PING","data_base64":"3f////8="}` + "\n" + `{"event":"PING","data":"after"}` + "\n")
			} else {
				e := &envelope{event: "PING", data: hostilePayload, opaque: true}
				stream = appendMsgpackEnvelope(nil, e)
				stream = append(stream, sgGoPacket("PING", appendMsgpackStr(nil, "after"))...)
			}
			writeString(t, in, string(stream))

			m := next(t, got)
			if !bytes.Equal(m.Raw, hostilePayload) {
				t.Fatalf("raw % x, want % x", m.Raw, hostilePayload)
			}
			_, err := m.Data()
			if !errors.Is(err, core.ErrUndecodable) || !strings.Contains(err.Error(), "offset 0") {
				t.Errorf("Data: %v, want ErrUndecodable naming the offset", err)
			}
			if d, err := next(t, got).Data(); d != "after" || err != nil {
				t.Errorf("next message: %#v, %v", d, err)
			}
		})
	}
}
