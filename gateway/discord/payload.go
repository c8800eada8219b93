package discord

import "encoding/json"

// Payload is a gateway message. D stays raw so that dispatches are not
// parsed twice.
type Payload struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  *int64          `json:"s,omitempty"`
	T  string          `json:"t,omitempty"`
}

// ReadyData is the part of READY a shard keeps.
type ReadyData struct {
	SessionID        string `json:"session_id"`
	ResumeGatewayURL string `json:"resume_gateway_url"`
	Guilds           []struct {
		ID string `json:"id"`
	} `json:"guilds"`
	User struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	} `json:"user"`
}
