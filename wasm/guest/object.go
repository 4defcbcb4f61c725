package guest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Object is a JSON object built member by member, in the order added — the
// cheapest way to build a record's data in a guest: no map, no reflection.
// The zero value is an empty object; methods return o so calls chain:
//
//	rec := new(guest.Object).
//		String("job_id", ev.JobID).
//		Bool("ok", true).
//		Raw("stats", ev.Stats)
//	return guest.Emit("results", rec), nil
//
// Keys are not checked for duplicates. An error (a NaN, or an Any value
// that does not encode) is kept and returned when the object is encoded.
type Object struct {
	b   []byte // the members so far, without braces
	err error
}

func (o *Object) key(k string) {
	switch {
	case o.b == nil:
		o.b = make([]byte, 0, 256) // one allocation for most records
	case len(o.b) > 0:
		o.b = append(o.b, ',')
	}
	o.b = appendString(o.b, k)
	o.b = append(o.b, ':')
}

// String adds a string member.
func (o *Object) String(key, v string) *Object {
	o.key(key)
	o.b = appendString(o.b, v)
	return o
}

// Int64 adds an integer member.
func (o *Object) Int64(key string, v int64) *Object {
	o.key(key)
	o.b = strconv.AppendInt(o.b, v, 10)
	return o
}

// Uint64 adds an unsigned integer member.
func (o *Object) Uint64(key string, v uint64) *Object {
	o.key(key)
	o.b = strconv.AppendUint(o.b, v, 10)
	return o
}

// Float64 adds a number member, formatted as encoding/json does. NaN and
// infinities are errors.
func (o *Object) Float64(key string, v float64) *Object {
	o.key(key)
	b, err := appendFloat(o.b, v, 64)
	if err != nil {
		o.fail(key, err)
		b = append(o.b, '0')
	}
	o.b = b
	return o
}

// Bool adds a boolean member.
func (o *Object) Bool(key string, v bool) *Object {
	o.key(key)
	o.b = strconv.AppendBool(o.b, v)
	return o
}

// Time adds a time member, in RFC 3339 with nanoseconds, as encoding/json
// encodes a time.Time.
func (o *Object) Time(key string, t time.Time) *Object {
	o.key(key)
	o.b = append(o.b, '"')
	o.b = t.AppendFormat(o.b, time.RFC3339Nano)
	o.b = append(o.b, '"')
	return o
}

// Raw adds a member whose value is JSON already (such as JobResult.Stats);
// nil or empty adds null. It is not validated: the host refuses an output
// that is not valid JSON.
func (o *Object) Raw(key string, v json.RawMessage) *Object {
	o.key(key)
	if len(v) == 0 {
		o.b = append(o.b, "null"...)
	} else {
		o.b = append(o.b, v...)
	}
	return o
}

// Any adds a member of any value a Record's Data may hold.
func (o *Object) Any(key string, v any) *Object {
	o.key(key)
	b, err := appendValue(o.b, v)
	if err != nil {
		o.fail(key, err)
		b = append(o.b, "null"...)
	}
	o.b = b
	return o
}

func (o *Object) fail(key string, err error) {
	if o.err == nil {
		o.err = fmt.Errorf("object member %q: %w", key, err)
	}
}

// AppendJSON appends the object to b.
func (o *Object) AppendJSON(b []byte) ([]byte, error) {
	if o == nil {
		return append(b, "null"...), nil
	}
	if o.err != nil {
		return nil, o.err
	}
	b = append(b, '{')
	b = append(b, o.b...)
	return append(b, '}'), nil
}

// MarshalJSON encodes the object.
func (o *Object) MarshalJSON() ([]byte, error) {
	return o.AppendJSON(nil)
}
