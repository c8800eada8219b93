// Package redact keeps broker credentials out of messages: it lists the
// secrets inside a URL (or a comma list of URLs, as REDIS_URL takes for a
// cluster) and removes them from URLs and text.
package redact

import (
	"errors"
	"net/url"
	"slices"
	"strings"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// parts cuts a comma list of URLs.
func parts(raw string) []string { return strings.Split(raw, ",") }

// split cuts one URL into what comes before the user info, the user info,
// and the rest. userinfo is empty when there is none. The last '@' ends
// the user info, as url.Parse reads it; cutting there even past the host
// only hides more.
func split(raw string) (head, userinfo, rest string) {
	afterScheme := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		afterScheme = i + 3
	}
	head, rest = raw[:afterScheme], raw[afterScheme:]
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		return head, rest[:at], rest[at+1:]
	}
	return head, "", rest
}

// Secrets lists the strings of raw that must not appear in messages: each
// user info, its password (escaped and unescaped; a bare token counts as
// one) and each query string, longest first so that a secret containing
// another is removed whole.
func Secrets(raw string) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, p := range parts(raw) {
		_, userinfo, rest := split(strings.TrimSpace(p))
		if userinfo != "" {
			add(userinfo)
			if _, pass, ok := strings.Cut(userinfo, ":"); ok {
				add(pass)
				if dec, err := url.PathUnescape(pass); err == nil {
					add(dec)
				}
			} else if dec, err := url.PathUnescape(userinfo); err == nil {
				add(dec)
			}
		}
		if _, q, ok := strings.Cut(rest, "?"); ok {
			add(q)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// URL returns raw (one URL or a comma list) with each user info replaced
// by Mask and each query by "...", fit for messages.
func URL(raw string) string {
	ps := parts(raw)
	for i, p := range ps {
		head, userinfo, rest := split(p)
		if q := strings.IndexByte(rest, '?'); q >= 0 {
			rest = rest[:q] + "?..."
		}
		if userinfo != "" {
			ps[i] = head + Mask + "@" + rest
		} else {
			ps[i] = head + rest
		}
	}
	return strings.Join(ps, ",")
}

// Text replaces in text every secret of the URLs raws by Mask.
func Text(text string, raws ...string) string {
	for _, raw := range raws {
		text = Strings(text, Secrets(raw)...)
	}
	return text
}

// Strings replaces in text every one of secrets (a token, a password) by
// Mask, in the order given; empty ones are skipped. Give a secret that
// contains another first, as Secrets does.
func Strings(text string, secrets ...string) string {
	for _, s := range secrets {
		if s != "" {
			text = strings.ReplaceAll(text, s, Mask)
		}
	}
	return text
}

// ParseError returns the message of err, a failure to parse raw, without
// any secret of raw: the parser's own words (a *url.Error's inner error,
// since url.Error quotes the whole URL) with every secret replaced by
// Mask. Callers quote URL(raw) beside it.
func ParseError(raw string, err error) string {
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		msg = ue.Err.Error()
	}
	return Text(msg, raw)
}
