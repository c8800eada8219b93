package cli

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// mapLookup is a lookupFunc over a map.
func mapLookup(m map[string]string) lookupFunc {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(mapLookup(nil), mapLookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		BrokerType:     "redis",
		AMQPURL:        "amqp://guest:guest@127.0.0.1:5672/",
		HubURL:         "ws://127.0.0.1:7700",
		Client:         core.DefaultClient(),
		MessageTimeout: 2 * time.Minute,
		MaxDeliveries:  5,
		Codec:          core.Msgpack{},
		LogLevel:       slog.LevelInfo,
	}
	if c != want {
		t.Errorf("defaults = %+v, want %+v", c, want)
	}
}

func TestLoadConfigFromEnvironment(t *testing.T) {
	env := map[string]string{
		"BROKER_TYPE":            "REDIS",
		"BROKER_GROUP":           "gateway",
		"BROKER_CLIENT":          "gateway-0",
		"BROKER_MESSAGE_TIMEOUT": "90s",
		"BROKER_MAX_DELIVERIES":  "-1",
		"BROKER_CODEC":           "json",
		"REDIS_URL":              "redis://:pw@localhost:6380/2",
		"REDIS_POOL_SIZE":        "7",
		"LOG_LEVEL":              "debug",
	}
	c, err := loadConfig(mapLookup(env), mapLookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		BrokerType:     "redis",
		AMQPURL:        "amqp://guest:guest@127.0.0.1:5672/",
		HubURL:         "ws://127.0.0.1:7700",
		Group:          "gateway",
		Client:         "gateway-0",
		MessageTimeout: 90 * time.Second,
		MaxDeliveries:  -1,
		Codec:          core.JSON{},
		RedisURL:       "redis://:pw@localhost:6380/2",
		PoolSize:       7,
		LogLevel:       slog.LevelDebug,
	}
	if c != want {
		t.Errorf("config = %+v, want %+v", c, want)
	}
}

func TestLoadConfigFlagsOverrideEnvironment(t *testing.T) {
	env := map[string]string{
		"BROKER_TYPE":            "kafka", // invalid, but a flag overrides it
		"BROKER_GROUP":           "env-group",
		"BROKER_CLIENT":          "env-client",
		"BROKER_MESSAGE_TIMEOUT": "abc",
		"BROKER_MAX_DELIVERIES":  "abc",
		"BROKER_CODEC":           "xml",
		"REDIS_URL":              "env:6379",
		"REDIS_POOL_SIZE":        "abc",
		"LOG_LEVEL":              "loud",
	}
	flags := map[string]string{
		"broker-type":     "redis",
		"group":           "flag-group",
		"client":          "flag-client",
		"message-timeout": "1m",
		"max-deliveries":  "3",
		"codec":           "msgpack",
		"redis-url":       "flag:6379",
		"pool-size":       "2",
		"log-level":       "warn",
	}
	c, err := loadConfig(mapLookup(env), mapLookup(flags))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		AMQPURL:        "amqp://guest:guest@127.0.0.1:5672/",
		HubURL:         "ws://127.0.0.1:7700",
		BrokerType:     "redis",
		Group:          "flag-group",
		Client:         "flag-client",
		MessageTimeout: time.Minute,
		MaxDeliveries:  3,
		Codec:          core.Msgpack{},
		RedisURL:       "flag:6379",
		PoolSize:       2,
		LogLevel:       slog.LevelWarn,
	}
	if c != want {
		t.Errorf("config = %+v, want %+v", c, want)
	}
}

func TestLoadConfigEmptyEnvironmentIsUnset(t *testing.T) {
	env := map[string]string{}
	for _, s := range settings() {
		env[s.env] = ""
	}
	c, err := loadConfig(mapLookup(env), mapLookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.BrokerType != "redis" || c.PoolSize != 0 || c.MessageTimeout != core.DefaultMessageTimeout || c.Client != core.DefaultClient() {
		t.Errorf("empty variables did not fall back to defaults: %+v", c)
	}
}

func TestLoadConfigMalformedNamesTheSource(t *testing.T) {
	cases := []struct {
		env, flag map[string]string
		want      string // the whole error message
	}{
		{env: map[string]string{"REDIS_POOL_SIZE": "abc"}, want: `REDIS_POOL_SIZE: "abc" is not an integer`},
		{env: map[string]string{"REDIS_POOL_SIZE": "-1"}, want: `REDIS_POOL_SIZE: "-1" must not be negative`},
		{env: map[string]string{"REDIS_POOL_SIZE": "5x"}, want: `REDIS_POOL_SIZE: "5x" is not an integer`},
		{flag: map[string]string{"pool-size": "abc"}, want: `--pool-size: "abc" is not an integer`},
		{env: map[string]string{"BROKER_MESSAGE_TIMEOUT": "120"}, want: `BROKER_MESSAGE_TIMEOUT: "120" is not a duration (examples: 30s, 2m, 1h)`},
		{env: map[string]string{"BROKER_MESSAGE_TIMEOUT": "-5s"}, want: `BROKER_MESSAGE_TIMEOUT: "-5s" must be positive`},
		{flag: map[string]string{"message-timeout": "soon"}, want: `--message-timeout: "soon" is not a duration (examples: 30s, 2m, 1h)`},
		{env: map[string]string{"BROKER_MAX_DELIVERIES": "many"}, want: `BROKER_MAX_DELIVERIES: "many" is not an integer`},
		{env: map[string]string{"BROKER_MAX_DELIVERIES": "0"}, want: `BROKER_MAX_DELIVERIES: "0": use a positive number, or a negative one to disable dead-lettering`},
		{env: map[string]string{"BROKER_TYPE": "kafka"}, want: `BROKER_TYPE: "kafka" is not a broker type (want redis, amqp, ipc or hub)`},
		{flag: map[string]string{"broker-type": "nats"}, want: `--broker-type: "nats" is not a broker type (want redis, amqp, ipc or hub)`},
		{env: map[string]string{"HUB_URL": "http://127.0.0.1:7700"}, want: `HUB_URL: "http://127.0.0.1:7700" is not a ws://, wss:// or tcp:// URL`},
		{env: map[string]string{"AMQP_URL": "http://user:secret@host/"}, want: `AMQP_URL: "http://xxxxx@host/" is not an amqp:// or amqps:// URL`},
		{env: map[string]string{"IPC_FORMAT": "xml"}, want: `IPC_FORMAT: invalid ipc broker config: unknown format "xml" (want json or msgpack)`},
		{env: map[string]string{"BROKER_CODEC": "xml"}, want: `BROKER_CODEC: unknown codec "xml" (want msgpack or json)`},
		{env: map[string]string{"BROKER_GROUP": "two words"}, want: `BROKER_GROUP: invalid identity: group name "two words" contains whitespace or control characters`},
		{env: map[string]string{"BROKER_CLIENT": "tab\there"}, want: `BROKER_CLIENT: invalid identity: client name "tab\there" contains whitespace or control characters`},
		{env: map[string]string{"LOG_LEVEL": "loud"}, want: `LOG_LEVEL: "loud" is not a log level (want debug, info, warn or error)`},
	}
	for _, c := range cases {
		_, err := loadConfig(mapLookup(c.env), mapLookup(c.flag))
		if err == nil || err.Error() != c.want {
			t.Errorf("env %v flags %v: err = %v, want %q", c.env, c.flag, err, c.want)
		}
	}
}

// TestReadmeDocumentsEverySetting keeps the README's configuration table
// complete.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	documented := func(env, flag string) {
		if !strings.Contains(readme, "`"+env+"`") || !strings.Contains(readme, "`--"+flag+"`") {
			t.Errorf("README.md does not document %s / --%s", env, flag)
		}
	}
	for _, s := range settings() {
		documented(s.env, s.flag)
	}
	for _, s := range gatewaySettings() {
		documented(s.env, s.flag)
	}
	if !strings.Contains(readme, "go test -race -count=1 ./...") {
		t.Error("README.md lacks the test command")
	}
}
