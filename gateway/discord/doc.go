// Package discord is the Discord gateway protocol model shared by the
// gateway and its simulator: opcodes, close codes and what a client does
// after each, intents, the payload envelope and READY, and the rules for
// a packet a worker may have the gateway send. It holds no state and
// imports nothing of this module.
package discord
