package gateway

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// benchDispatches are MESSAGE_CREATE-sized dispatches (about 1 KiB), as
// Discord writes them.
func benchDispatches(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"t":"MESSAGE_CREATE","s":%d,"op":0,"d":{"type":0,"tts":false,"timestamp":"2026-12-01T14:00:00.000000+00:00","pinned":false,"nonce":"%d","mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":["41771983423143936"],"premium_since":null,"pending":false,"nick":null,"mute":false,"joined_at":"2021-01-01T00:00:00.000000+00:00","flags":0,"deaf":false,"avatar":null},"id":"%d","flags":0,"embeds":[],"edited_timestamp":null,"content":"%s","components":[],"channel_id":"41771983444115456","author":{"username":"someone","public_flags":0,"id":"41771983423143937","global_name":"Someone","discriminator":"0","avatar":"a_1234567890abcdef"},"attachments":[],"guild_id":"41771983423143936"}}`,
			i+1, 1000+i, 1300000000000000000+i, strings.Repeat("hello ", 60))
	}
	return out
}

// compressedFrames is the websocket messages carrying payloads.
func compressedFrames(b *testing.B, c Compression, payloads [][]byte) [][]byte {
	var buf bytes.Buffer
	var write func([]byte)
	switch c {
	case CompressZlib:
		zw := zlib.NewWriter(&buf)
		write = func(p []byte) { _, _ = zw.Write(p); _ = zw.Flush() }
	case CompressZstd:
		zw, err := zstd.NewWriter(&buf, zstd.WithWindowSize(1<<20))
		if err != nil {
			b.Fatal(err)
		}
		write = func(p []byte) { _, _ = zw.Write(p); _ = zw.Flush() }
	default:
		write = func(p []byte) { buf.Write(p) }
	}
	msgs := make([][]byte, len(payloads))
	for i, p := range payloads {
		write(p)
		msgs[i] = bytes.Clone(buf.Bytes())
		buf.Reset()
	}
	return msgs
}

// BenchmarkPayloadPath measures what a shard does with each frame before
// it offers the dispatch: inflate, cut the payload out of the stream and
// read op, t, s and d. "jsonscan" is the shard's path; "encoding-json" is
// the path it replaced (json.Decoder into a RawMessage, then json.Unmarshal
// into a discord.Payload), run side by side on the same frames.
func BenchmarkPayloadPath(b *testing.B) {
	payloads := benchDispatches(1000)
	size := 0
	for _, p := range payloads {
		size += len(p)
	}
	for _, c := range []Compression{CompressZstd, CompressZlib, CompressNone} {
		msgs := compressedFrames(b, c, payloads)
		for _, path := range []string{"jsonscan", "encoding-json"} {
			b.Run(string(c)+"/"+path, func(b *testing.B) {
				b.SetBytes(int64(size / len(payloads)))
				b.ReportAllocs()
				var r *payloadReader
				var dec *json.Decoder
				left := 0
				reset := func() {
					f := &frames{msgs: msgs}
					if r != nil {
						r.close()
					}
					var err error
					if r, err = newPayloadReader(f, c, MaxInboundPayload); err != nil {
						b.Fatal(err)
					}
					if path == "encoding-json" {
						dec = nil
						if c != CompressNone {
							// The replaced path read the inflated stream with a
							// decoder; here without reading from the websocket,
							// which the shard's path still pays.
							dec = json.NewDecoder(inflate(b, c, msgs))
						}
					}
					left = len(msgs)
				}
				b.StopTimer()
				reset()
				b.StartTimer()
				for b.Loop() {
					if left == 0 {
						b.StopTimer()
						reset()
						b.StartTimer()
					}
					left--
					var p discord.Payload
					var err error
					switch {
					case path == "jsonscan":
						var raw []byte
						if raw, err = r.next(); err == nil {
							p, err = parsePayload(raw)
						}
					case dec != nil:
						var raw json.RawMessage
						if err = dec.Decode(&raw); err == nil {
							err = json.Unmarshal(raw, &p)
						}
					default:
						var raw []byte
						if raw, err = r.next(); err == nil {
							err = json.Unmarshal(raw, &p)
						}
					}
					if err != nil || p.T != "MESSAGE_CREATE" || len(p.D) < 900 {
						b.Fatalf("payload %q: %v", p.T, err)
					}
				}
				r.close()
			})
		}
	}
}

// inflate is the inflated stream of compressed messages.
func inflate(b *testing.B, c Compression, msgs [][]byte) io.Reader {
	src := bytes.NewReader(bytes.Join(msgs, nil))
	if c == CompressZlib {
		r, err := zlib.NewReader(src)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	r, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Close)
	return r
}
