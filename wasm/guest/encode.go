package guest

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// The outputs encode themselves without reflection where they can (see
// decode.go for why). Record data of the common dynamic types — strings,
// booleans, numbers, nil, json.RawMessage, json.Marshaler (time.Time among
// them), *Object, map[string]any, map[string]string, []any and []string, nested —
// is encoded directly; anything else (structs, typed slices, pointers)
// goes through encoding/json.

// MarshalJSON encodes o as the ABI's correlation output.
func (o CorrelationOutput) MarshalJSON() ([]byte, error) {
	return o.AppendJSON(nil)
}

// AppendJSON appends o, encoded as MarshalJSON does, to b. The SDK encodes
// outputs with it, into a buffer reused from call to call.
func (o CorrelationOutput) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	sep := false
	if o.Hold != nil {
		b = append(b, `"hold":`...)
		b = strconv.AppendBool(b, *o.Hold)
		sep = true
	}
	if o.Datacenters != nil {
		if sep {
			b = append(b, ',')
		}
		b = append(b, `"datacenters":`...)
		b = appendStrings(b, o.Datacenters)
		sep = true
	}
	if len(o.Notes) > 0 {
		if sep {
			b = append(b, ',')
		}
		b = append(b, `"notes":`...)
		b = appendStrings(b, o.Notes)
	}
	return append(b, '}'), nil
}

// MarshalJSON encodes o as the ABI's reporter output, with "records": []
// rather than null when there is none.
func (o ReporterOutput) MarshalJSON() ([]byte, error) {
	return o.AppendJSON(nil)
}

// AppendJSON appends o, encoded as MarshalJSON does, to b. The SDK encodes
// outputs with it, into a buffer reused from call to call.
func (o ReporterOutput) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"records":[`...)
	for i, r := range o.Records {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sink":`...)
		b = appendString(b, r.Sink)
		b = append(b, `,"data":`...)
		var err error
		if b, err = appendValue(b, r.Data); err != nil {
			return nil, fmt.Errorf("record %d (sink %q): %w", i, r.Sink, err)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
}

// appendValue appends v as JSON.
func appendValue(b []byte, v any) ([]byte, error) {
	var err error
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int8:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int16:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint8:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case float64:
		return appendFloat(b, v, 64)
	case float32:
		return appendFloat(b, float64(v), 32)
	case json.Number:
		if v == "" {
			return append(b, '0'), nil
		}
		if !isNumber(string(v)) {
			return nil, fmt.Errorf("invalid json.Number %q", v)
		}
		return append(b, v...), nil
	case *Object:
		return v.AppendJSON(b)
	case json.RawMessage:
		// Written as is (json.Marshal would also compact it); the host
		// refuses an output that is not valid JSON.
		if v == nil {
			return append(b, "null"...), nil
		}
		return append(b, v...), nil
	case []string:
		if v == nil {
			return append(b, "null"...), nil
		}
		return appendStrings(b, v), nil
	case []any:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '{')
		for i, k := range sortedKeys(v) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			if b, err = appendValue(b, v[k]); err != nil {
				return nil, fmt.Errorf("key %q: %w", k, err)
			}
		}
		return append(b, '}'), nil
	case map[string]string:
		if v == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '{')
		for i, k := range sortedKeys(v) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, v[k])
		}
		return append(b, '}'), nil
	case json.Marshaler:
		j, err := v.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return append(b, j...), nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, j...), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendFloat formats f as encoding/json does (ES6 number formatting).
func appendFloat(b []byte, f float64, bits int) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("unsupported value: %v", f)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// isNumber reports whether s is a JSON number.
func isNumber(s string) bool {
	d := decoder{b: []byte(s)}
	return d.number() == nil && d.i == len(s)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: '"', '\\' and control characters
// escaped, invalid UTF-8 replaced with U+FFFD, U+2028 and U+2029 escaped (as
// encoding/json does, without its HTML escaping).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && plain8(load64(s, i)) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
