// Package core is the Spectacles contract: who a service is (Identity), what
// travels (Message, Payload), what every broker offers (Broker), how payloads
// are encoded (Codec) and the shard math the gateway and its workers share.
//
// Every broker driver under transport/ implements Broker and proves it by
// passing the suite in core/conformance. core imports no other package of
// this module.
package core
