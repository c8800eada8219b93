// Package hub is the direct transport: `spectacles hub` is a node that
// services connect to over a websocket or TCP, in the manner of DRS
// (github.com/ironbay/drs), with the Spectacles guarantees. Server is the
// hub; Broker is a core.Broker that talks to one (BROKER_TYPE=hub,
// HUB_URL=ws://host:port or tcp://host:port).
//
// # Wire
//
// One address serves both: a connection whose first byte is 'G' is an
// HTTP request upgraded to a websocket (any path), on which every text or
// binary message is one command; any other connection speaks
// newline-delimited JSON, one command per line (blank lines are ignored).
// A command is one JSON object:
//
//	{"action": "MESSAGE_CREATE", "body": {...}, "key": "k1"}
//
// action is an event name, or a reserved action (drs.*); body is the
// payload as JSON (body_base64 carries bytes that are not JSON, such as a
// Go service's msgpack, in standard base64); key pairs a command with its
// answer. Commands over the size limit (4 MiB by default) are skipped and
// answered with drs.error; the connection stays open.
//
// # Conversation
//
// A client registers first (the gist's registration):
//
//	→ {"action":"drs.register","key":"r","body":{"group":"audit","client":"a1","version":"1.0.0","actions":["MESSAGE_CREATE"],"calls":[]}}
//	← {"action":"drs.response","key":"r","body":{"session":"s1","sub":"u2","max_message_size":4194304}}
//
// group may be left out by a client that only sends. Any command before
// registration is answered with drs.error (code "unregistered"). Then:
//
//   - Fire: {"action":EVENT,"body":...}: published to every group that
//     handles EVENT, once to one instance of each. When no group does, the
//     hub answers drs.error (code "unhandled", with the key if any) and
//     publishes core.EventUnhandled.
//   - Call: {"action":EVENT,"body":...,"key":K}: the same, and the first
//     handler's answer comes back as {"action":"drs.response","key":K,
//     "body":...}, or drs.exception (the handler failed) with its reason.
//     When no instance online handles EVENT, drs.error with K at once.
//   - A delivery to a handler: {"action":EVENT,"key":TAG,"id":ID,
//     "sub":SUB,"deliveries":N,"call":true|absent,"body":...}. The
//     handler settles it with {"action":"drs.response","key":TAG,
//     "body":...} (answer and acknowledge, the DRS way), drs.ack (just
//     acknowledge), drs.reply (answer only), drs.error or drs.exception
//     (fail the call and acknowledge), or drs.reject with {"reason":...}
//     (move it to EVENT:dlq). A delivery that is not settled within the
//     subscription's message timeout, or whose connection goes away, is
//     given to another instance of the group with deliveries raised;
//     past max_deliveries it moves to EVENT:dlq.
//   - drs.subscribe {"actions":[...],"prefetch":64,"message_timeout_ms":
//     120000,"max_deliveries":5,"calls":[...]} adds a subscription (its id
//     in the answer, "sub"); drs.unsubscribe {"sub":...} ends one.
//   - drs.broadcast {"action":A,"body":B} sends {"action":A,"body":B} to
//     every registered connection; nothing acknowledges it.
//   - drs.presence answers with the registered instances (core.Instance
//     in JSON), drs.history {"count":n} with the latest presence events
//     (core.PresenceEvent, newest first); drs.ping answers drs.response;
//     drs.bye, sent before closing, makes presence report the departure
//     as "closed" (as does a websocket close frame) rather than "lost".
//
// Every command that cannot be carried out is answered with drs.error
// whose body is an ErrorBody ({"reason", "code", "action", "id"}) and the
// command's key; the hub never answers by closing the connection.
//
// # Presence
//
// The hub announces its instances natively: a client is an instance of
// its group from its first subscription on (one that only sends is not
// announced, as the gist's consumers). It publishes
// core.EventInstanceConnected and core.EventInstanceDisconnected for every
// instance, and core.EventGroupOnline and
// core.EventGroupOffline for the first and last of a group, as ordinary
// events (JSON core.PresenceEvent). A client killed with -9 is seen gone
// as soon as its operating system closes the socket; a websocket peer
// that stops answering pings is dropped after 15 s; TCP connections use
// keep-alives.
//
// # Limits
//
// Everything lives in the hub's memory: a restart loses what was queued
// and what was in flight. Go clients (Broker) reconnect by themselves,
// register and subscribe again; what they publish while reconnecting
// fails with ErrConnectionLost, and acks of deliveries from the old
// connection are refused (those messages went back to their queue, or
// were lost with the hub). Each (event, group) queue
// keeps at most ServerConfig.MaxQueueLength waiting messages.
package hub
