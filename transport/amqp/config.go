package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/redact"
)

// Defaults for Config fields left zero.
const (
	// DefaultURL is the server used when Config.URL is empty: a local
	// RabbitMQ with its stock guest account.
	DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"
	// DefaultPrefetch is the basic.qos prefetch count of each queue
	// consumer.
	DefaultPrefetch = 256
	// DefaultPublishChannels is how many confirm-mode channels publishes
	// are spread over.
	DefaultPublishChannels = 2
	// DefaultConnectTimeout bounds one dial and AMQP handshake.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultHeartbeat is the AMQP heartbeat interval asked of the server.
	DefaultHeartbeat = 10 * time.Second
	// DefaultManagementPort is the port of the RabbitMQ management API
	// (rabbitmq_management) a ManagementURL derived from an amqp:// URL
	// points at; DefaultManagementTLSPort for amqps://.
	DefaultManagementPort    = 15672
	DefaultManagementTLSPort = 15671
	// ManagementOff, as Config.ManagementURL, disables the management API.
	ManagementOff = "off"
)

// ErrInvalidURL is wrapped by the errors of Open for a URL it cannot parse.
// Those errors never contain the URL's password.
var ErrInvalidURL = errors.New("invalid AMQP URL")

// ErrInvalidConfig is wrapped by the errors of Open for settings that
// cannot work together.
var ErrInvalidConfig = errors.New("invalid AMQP broker config")

// Config configures the driver.
type Config struct {
	core.Options
	// URL is the server (AMQP_URL): "amqp://user:pass@host:port/vhost", or
	// "amqps://..." for TLS. The amqp091 query options (heartbeat,
	// connection_timeout, auth_mechanism, certfile, keyfile, cacertfile,
	// server_name_indication) are accepted. Empty means DefaultURL.
	URL string
	// TLS configures amqps:// connections. Nil uses the system's roots and
	// the URL's host name (or the URL's certfile, keyfile and cacertfile).
	TLS *tls.Config
	// Exchange is the durable direct exchange this client publishes to and
	// whose queues it consumes: the Spectacles "group" of the AMQP
	// protocol. Default Options.Identity.Group; one of them is required.
	Exchange string
	// Subgroup is the optional middle part of this client's queue names,
	// <exchange>:[<subgroup>:]<event>. Clients with the same exchange and
	// subgroup share one queue per event, and so each message; clients
	// with different subgroups each get a copy of every message.
	Subgroup string
	// Prefetch is how many unacknowledged messages RabbitMQ sends ahead to
	// each queue consumer (basic.qos, per consumer). Default
	// DefaultPrefetch. A prefetched message waits at most
	// Options.MessageTimeout for a free handler; then the client gives the
	// waiting messages back to their queues for the other clients (see
	// the package doc).
	Prefetch int
	// PublishChannels is how many confirm-mode channels publishes are
	// spread over; each carries many publishes awaiting their confirms.
	// Default DefaultPublishChannels.
	PublishChannels int
	// Expire gives every published message an AMQP expiration of
	// Options.MessageTimeout, as spec-tacles/gateway does. Off by default:
	// RabbitMQ drops a message that waited in a queue longer than that,
	// and the queues (which peers declare too, without arguments) have no
	// dead-letter exchange, so an expired message is lost.
	Expire bool
	// ConnectTimeout bounds each dial and handshake, and how long Consume
	// waits for a connection while RabbitMQ is unreachable. Default: the
	// URL's connection_timeout (milliseconds), else DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval asked of the server; a
	// "heartbeat" URL option wins. Default DefaultHeartbeat.
	Heartbeat time.Duration
	// ManagementURL is the RabbitMQ management API (the rabbitmq_management
	// plugin) the Inspector methods use when it answers:
	// "http[s]://[user:pass@]host:port[/prefix]". Empty derives it from
	// URL: its host, port DefaultManagementPort and http (amqps://: port
	// DefaultManagementTLSPort and https). Without user info in it, the
	// credentials of URL are used; the virtual host is always URL's.
	// ManagementOff ("off") disables it: the Inspector then answers from
	// AMQP alone (see the package doc). Its password never appears in
	// errors, and a derived value never holds one.
	ManagementURL string
	// UnhandledInterval is how often, at most, the broker reports the
	// events it published that no queue took (core.EventUnhandled, one
	// per event, with the counts). Default core.UnhandledInterval;
	// negative turns the reports off (UnhandledCounts still counts).
	UnhandledInterval time.Duration
	// Passive makes Open declare nothing, for a client that only inspects:
	// it does not open the first publishing channel, whose exchange
	// declaration would create the group's exchange. Publishing still
	// declares it, when its channel opens.
	Passive bool
}

// withDefaults validates c and fills its zero fields.
func (c Config) withDefaults() (Config, error) {
	if c.Prefetch < 0 || c.PublishChannels < 0 || c.ConnectTimeout < 0 || c.Heartbeat < 0 {
		return c, fmt.Errorf("%w: Prefetch, PublishChannels, ConnectTimeout and Heartbeat must not be negative", ErrInvalidConfig)
	}
	if c.Prefetch > 65535 {
		return c, fmt.Errorf("%w: Prefetch %d is above AMQP's 65535", ErrInvalidConfig, c.Prefetch)
	}
	c.Options = c.Options.WithDefaults()
	c.URL = strings.TrimSpace(c.URL)
	if c.URL == "" {
		c.URL = DefaultURL
	}
	uri, err := parseURL(c.URL)
	if err != nil {
		return c, err
	}
	if c.Exchange == "" {
		c.Exchange = c.Identity.Group
	}
	if c.Exchange == "" {
		return c, fmt.Errorf("%w: an exchange is required: set Config.Exchange or Options.Identity.Group", ErrInvalidConfig)
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.PublishChannels == 0 {
		c.PublishChannels = DefaultPublishChannels
	}
	if c.ConnectTimeout == 0 && uri.ConnectionTimeout > 0 {
		c.ConnectTimeout = time.Duration(uri.ConnectionTimeout) * time.Millisecond
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.ManagementURL, err = managementURL(c.ManagementURL, uri); err != nil {
		return c, err
	}
	return c, nil
}

// managementURL checks raw, a Config.ManagementURL, or derives it from the
// AMQP URL when raw is empty. Its errors wrap ErrInvalidConfig and never
// contain a secret of raw.
func managementURL(raw string, amqpURI amqp091.URI) (string, error) {
	raw = strings.TrimSpace(raw)
	if strings.EqualFold(raw, ManagementOff) {
		return ManagementOff, nil
	}
	if raw == "" {
		scheme, port := "http", DefaultManagementPort
		if amqpURI.Scheme == "amqps" {
			scheme, port = "https", DefaultManagementTLSPort
		}
		return (&url.URL{Scheme: scheme, Host: net.JoinHostPort(amqpURI.Host, strconv.Itoa(port))}).String(), nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: ManagementURL %q: %s", ErrInvalidConfig, redact.URL(raw), redact.ParseError(raw, err))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w: ManagementURL %q: want http://host:port or https://host:port, or %q", ErrInvalidConfig, redact.URL(raw), ManagementOff)
	}
	return raw, nil
}

// QueueName is the queue of event for exchange and subgroup, as the
// Spectacles protocol names it: <exchange>:[<subgroup>:]<event>.
func QueueName(exchange, subgroup, event string) string {
	if subgroup == "" {
		return exchange + ":" + event
	}
	return exchange + ":" + subgroup + ":" + event
}

// parseURL checks raw with the parser amqp091 dials with. Its errors wrap
// ErrInvalidURL and never contain a secret of raw.
func parseURL(raw string) (amqp091.URI, error) {
	u, err := amqp091.ParseURI(raw)
	if err != nil {
		return u, scrubURLError(raw, err)
	}
	return u, nil
}

// scrubURLError describes a parse failure of raw without any secret it
// holds: the user info and query values are removed from both the URL and
// the parser's message (url.Parse quotes the URL).
func scrubURLError(raw string, err error) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidURL, redact.URL(raw), redact.ParseError(raw, err))
}
