// Package tui is the spectacles console: a Bubble Tea program that shows a
// node's broker (streams, consumer groups, pending entries, dead letters)
// and gateway (shard health) live, and lets an operator claim, ack,
// dead-letter, requeue, publish, call and SEND-route packets by hand.
//
// The root Model (model.go) is thin: it owns the layout, the input mode
// (normal, modal, help, payload) and the refresh timer, and routes
// messages. Each view is a component with its own keys and requests, and
// the root talks to every view through one interface (view, navigable).
// The modal input (palette, filter, prompt, confirmation) is one component
// (modal.go); header, tabs, status line, footer and help are the chrome
// (chrome.go). A change to the broker or gateway is an action value
// (actions.go) that a view builds and the root confirms and runs. Every
// broker or gateway call runs in a tea.Cmd with a deadline, at most one
// load per view is in flight, and results of a load the view no longer
// wants are dropped.
// Views hold one page of data at most, so that a stream of millions of
// entries costs what a short one does.
//
// The console reaches the node only through Backend; Node assembles one
// from a core.Inspector, a core.Broker and a gateway (a *gateway.Manager).
package tui
