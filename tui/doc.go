// Package tui is the spectacles console: a Bubble Tea program that shows a
// node's broker (streams, consumer groups, pending entries, dead letters)
// and gateway (shard health) live, and lets an operator claim, ack,
// dead-letter, requeue, publish, call and SEND-route packets by hand.
//
// The root Model owns the layout, the input mode (normal, palette, filter,
// prompt, confirmation, help, payload) and the refresh timer; each view is
// a component with its own keys and requests. Every broker or gateway call
// runs in a tea.Cmd with a deadline, at most one load per view is in
// flight, and results of a load the view no longer wants are dropped.
// Views hold one page of data at most, so that a stream of millions of
// entries costs what a short one does.
//
// The console reaches the node only through Backend; Node assembles one
// from a core.Inspector, a core.Broker and a gateway (a *gateway.Manager).
package tui
