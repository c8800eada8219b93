package gateway

// guildRef reads a guild's id and availability from GUILD_CREATE/DELETE.
type guildRef struct {
	ID          string `json:"id"`
	Unavailable bool   `json:"unavailable"`
}
