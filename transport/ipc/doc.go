// Package ipc is the IPC driver of Spectacles: a core.Broker over a pair of
// byte streams, the standard input and output of a process (Stdio) or any
// io.Reader and io.Writer (New). Nodes are piped into each other:
//
//	spectacles gateway | my-bot
//
// # JSON lines (the default Format)
//
// The protocol's IPC format: one JSON object per line, in both directions,
// UTF-8, each line ended by "\n" ("\r\n" is accepted). Fields:
//
//	event        string, required: the event name.
//	id           string: the message id, which Publish returns and a reply
//	             refers to. A line without one gets an id when it is read.
//	data         any JSON value: the payload.
//	data_base64  string, instead of data: a payload that is not JSON, as
//	             standard base64 (padded; unpadded is accepted on input).
//	reply_to     string: this line answers the call whose message had this
//	             id; it is given to that call and to no consumer.
//	headers      object of strings: metadata (dead letters carry the
//	             core.Header* keys).
//
// Ids are a random 16-hex-digit prefix per broker, a hyphen and a
// sequence number. Fields are written in that order, on one line, without
// spaces (headers with their keys sorted):
//
//	{"event":"MESSAGE_CREATE","id":"9f86d081884c7d65-1","data":{"content":"hi"}}
//	{"event":"REQUEST","id":"9f86d081884c7d65-2","data":{"n":7}}
//	{"event":"REQUEST:9f86d081884c7d65-2","reply_to":"9f86d081884c7d65-2","data":{"echo":{"n":7}}}
//	{"event":"RAW","id":"9f86d081884c7d65-3","data_base64":"wf8Aew=="}
//
// A reply's event is "{event}:{id}", as Redis replies are published, so a
// peer that reads only "event" and "data" can tell replies apart, and a
// peer that writes only "event" and "data" can answer a call by writing
// that event. A peer's plain {"event": …, "data": …} lines are delivered
// like any other. Field names are matched exactly (not case-insensitively
// as encoding/json would); unknown fields are ignored; of a repeated field
// the last counts; a null string field counts as absent. Lines that are
// not such an object (invalid JSON, no "event", a field of the wrong type)
// and lines longer than Config.MaxMessageSize are logged and skipped: the
// stream goes on with the next line. Blank lines are ignored.
//
// Payloads. A value given to Publish, Call or Reply is encoded as JSON,
// whatever Options.Codec says, and written as data; the consumer's
// Message decodes it with core.JSON (numbers become int64 when integral,
// else float64; structs use their json tags). A core.Raw is written as it
// is when it is JSON (line breaks between tokens removed); a core.Raw that
// is a msgpack str or bin holding a JSON object or array (what the gateway
// publishes with the msgpack codec, and what core.Msgpack reads as that
// JSON) is written as that JSON; any other core.Raw is written as
// data_base64, and its consumer receives exactly those bytes, decoded with
// its own Options.Codec. A reply to a data_base64 message is encoded with
// that codec too.
//
// # Msgpack (Config.Format = Msgpack)
//
// spec-tacles/go's stdio format: msgpack maps written back to back, with no
// framing. The map holds the same fields with the same meaning, except
// that data is written as the msgpack value of the payload (so that
// spec-tacles/go, which decodes {"event","data"} maps and ignores other
// keys, reads it) and opaque payloads go in "data_bin", a bin value, instead
// of data_base64. Strings are written with the fixstr, str16 and str32
// headers, never str8, as spec-tacles/gateway writes them, so that
// decoders of the old msgpack spec read them. Values given to Publish are encoded with core.Msgpack; a
// core.Raw that is exactly one msgpack value is written as it is; a
// core.Raw that is a JSON object or array is written as a str holding it,
// as spec-tacles/gateway writes dispatches; anything else goes in data_bin.
// Received data is decoded with core.Msgpack, which also reads a str or bin
// holding JSON, as spec-tacles/go peers write it. A value that is not such
// a map is logged and skipped whole; bytes that are not msgpack (0xc1), or
// a value longer than Config.MaxMessageSize, are skipped one byte at a time
// until a value parses again. With no framing, garbage that happens to
// parse as a long value can swallow the messages after it: the JSON lines
// format recovers better.
//
// # Guarantees IPC cannot give
//
// A pipe has no server: there is no persistence, no acknowledgement
// across the pipe, and no redelivery. A message is delivered at most once
// to this process; one that was received but not handled when the process
// dies, or when Close or the end of Consume's ctx drops it, is lost. Ack
// only marks the message settled; Options.MessageTimeout and MaxDeliveries
// do nothing. There are no groups: every process reading the stream sees
// every message, whatever its group (a broadcast, not a queue), and within
// one broker each message goes to one of the Consume calls that asked for
// its event. The input is read from the first Consume or Call on (what the
// peer wrote before waits in the pipe); from then on, messages for events
// no Consume asked for are dropped, and so are messages read before a
// later Consume asks for their event: ask for every event in the first
// Consume. Reject writes the message with its core.Header* metadata under
// core.DeadLetterEvent(event) ("{event}:dlq"), for a peer that consumes
// it; nothing keeps it if nobody does. Call needs the answering peer's output
// to come back to the caller's input (two processes piped both ways, or a
// hub that broadcasts every line).
//
// Publish returns once the message was written to the output (and flushed,
// when the output has a Flush method): concurrent publishers share one
// write, and messages never interleave. A full pipe slows publishers down.
// Writing to a closed pipe fails every later write; on os.Stdout the Go
// runtime kills the process with SIGPIPE unless the program handles that
// signal (signal.Ignore(syscall.SIGPIPE) makes Publish return EPIPE).
//
// At the end of the input (EOF) consumers handle what they received and
// end, calls fail with ErrInputEnded, and Done is closed; publishing goes
// on working.
package ipc
