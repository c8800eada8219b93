package ipc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spectacles-go/spectacles/internal/jsonscan"
)

// parseJSONEnvelope reads one line (white space around it allowed): an
// object whose known fields have the right types, validated and cut in one
// pass (internal/jsonscan). Unknown fields are skipped; of repeated fields
// the last counts.
func parseJSONEnvelope(line []byte) (*envelope, error) {
	e := &envelope{}
	var (
		event, dataB64       string
		hasEvent, hasDataB64 bool
		data                 []byte
	)
	err := jsonscan.Object(line, func(k []byte, esc bool, val []byte) error {
		key, err := jsonscan.Key(k, esc)
		if err != nil {
			return err
		}
		switch key {
		case fieldEvent, fieldID, fieldReplyTo, fieldDataBase64:
			s, isNull, err := jsonStringField(key, val)
			if err != nil {
				return err
			}
			switch key {
			case fieldEvent:
				event, hasEvent = s, !isNull
			case fieldID:
				e.id = s
			case fieldReplyTo:
				e.replyTo = s
			default:
				dataB64, hasDataB64 = s, !isNull
			}
		case fieldHeaders:
			var h map[string]string
			if err := json.Unmarshal(val, &h); err != nil {
				return fmt.Errorf("%q: %w", key, err)
			}
			e.headers = h
		case fieldData:
			data = val
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !hasEvent || event == "" {
		return nil, errors.New(`no "event"`)
	}
	e.event = event
	switch {
	case hasDataB64:
		raw, err := decodeBase64(dataB64)
		if err != nil {
			return nil, fmt.Errorf(`"data_base64": %w`, err)
		}
		e.data, e.opaque = raw, true
	case data != nil:
		e.data = append([]byte(nil), data...)
	default:
		e.data = jsonNull
	}
	return e, nil
}

// jsonStringField reads a field that must be a string (or null, which
// leaves it unset, as encoding/json does).
func jsonStringField(key string, val []byte) (s string, isNull bool, err error) {
	if len(val) == 4 && string(val) == "null" {
		return "", true, nil
	}
	if val[0] != '"' {
		return "", false, fmt.Errorf("%q is not a string", key)
	}
	s, err = jsonscan.StringValue(val, bytes.IndexByte(val, '\\') >= 0)
	return s, false, err
}

// decodeBase64 decodes standard base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if raw, err2 := base64.RawStdEncoding.DecodeString(s); err2 == nil {
			return raw, nil
		}
		return nil, err
	}
	return raw, nil
}
