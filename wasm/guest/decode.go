package guest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// The event types decode themselves with the small decoder below rather
// than with encoding/json's reflection: in a wasip1 guest, reflection and
// encoding/json's per-byte scanner cost tens of microseconds per event, this
// decoder a few. It gives what encoding/json gives (codec_test.go checks it
// against encoding/json, also by fuzzing): it accepts exactly valid JSON
// (RFC 8259), matches keys to fields exactly or else case-insensitively,
// ignores unknown fields, leaves a field unchanged when its value is null
// (a slice becomes nil), and replaces invalid UTF-8 in strings with U+FFFD.

// UnmarshalJSON decodes a correlation event.
func (e *CorrelationEvent) UnmarshalJSON(b []byte) error {
	d := newDecoder(b)
	more, err := d.openObject()
	for first := true; more && err == nil; first = false {
		var key []byte
		if key, more, err = d.key(first); more && err == nil {
			err = e.field(&d, key)
		}
	}
	return d.done("correlation event", err)
}

var correlationEventFields = []string{"kind", "type", "episode", "severity", "previous_severity", "affected_datacenters", "healthy_datacenters", "held_leases", "time"}

// field decodes the value of member key into e.
func (e *CorrelationEvent) field(d *decoder, key []byte) error {
	switch string(key) {
	case "kind":
		return d.str(&e.Kind)
	case "type":
		return d.str(&e.Type)
	case "episode":
		return d.str(&e.Episode)
	case "severity":
		return d.str(&e.Severity)
	case "previous_severity":
		return d.str(&e.PreviousSeverity)
	case "affected_datacenters":
		return d.strings(&e.AffectedDatacenters)
	case "healthy_datacenters":
		return d.strings(&e.HealthyDatacenters)
	case "held_leases":
		return d.heldLeases(&e.HeldLeases)
	case "time":
		return d.time(&e.Time)
	default:
		if name := folded(key, correlationEventFields); name != "" {
			return e.field(d, []byte(name))
		}
		return d.skip()
	}
}

// UnmarshalJSON decodes a held lease.
func (l *HeldLease) UnmarshalJSON(b []byte) error {
	d := newDecoder(b)
	return d.done("held lease", d.heldLease(l))
}

func (d *decoder) heldLeases(ls *[]HeldLease) error {
	more, err := d.openArray()
	if err == nil {
		*ls = nil
		if more {
			*ls = make([]HeldLease, 0, 4) // one allocation for most lists
		}
	}
	for first := true; more && err == nil; first = false {
		if more, err = d.elem(first); !more || err != nil {
			break
		}
		var l HeldLease
		if err = d.heldLease(&l); err == nil {
			*ls = append(*ls, l)
		}
	}
	return err
}

func (d *decoder) heldLease(l *HeldLease) error {
	more, err := d.openObject()
	for first := true; more && err == nil; first = false {
		var key []byte
		if key, more, err = d.key(first); more && err == nil {
			err = l.field(d, key)
		}
	}
	return err
}

var heldLeaseFields = []string{"job_id", "owner", "owner_dc", "token"}

// field decodes the value of member key into l.
func (l *HeldLease) field(d *decoder, key []byte) error {
	switch string(key) {
	case "job_id":
		return d.str(&l.JobID)
	case "owner":
		return d.str(&l.Owner)
	case "owner_dc":
		return d.str(&l.OwnerDC)
	case "token":
		return d.uint(&l.Token)
	default:
		if name := folded(key, heldLeaseFields); name != "" {
			return l.field(d, []byte(name))
		}
		return d.skip()
	}
}

// folded returns the name among names that key matches case-insensitively
// (bytes.EqualFold, as encoding/json matches a key no field has exactly),
// or "".
func folded(key []byte, names []string) string {
	for _, name := range names {
		if bytes.EqualFold(key, []byte(name)) {
			return name
		}
	}
	return ""
}

// UnmarshalJSON decodes a job result event.
func (e *JobResult) UnmarshalJSON(b []byte) error {
	d := newDecoder(b)
	more, err := d.openObject()
	for first := true; more && err == nil; first = false {
		var key []byte
		if key, more, err = d.key(first); more && err == nil {
			err = e.field(&d, key)
		}
	}
	return d.done("job_result event", err)
}

var jobResultFields = []string{"kind", "job_id", "workflow", "datacenter", "source", "stats", "time"}

// field decodes the value of member key into e.
func (e *JobResult) field(d *decoder, key []byte) error {
	switch string(key) {
	case "kind":
		return d.str(&e.Kind)
	case "job_id":
		return d.str(&e.JobID)
	case "workflow":
		return d.str(&e.Workflow)
	case "datacenter":
		return d.str(&e.Datacenter)
	case "source":
		return d.str(&e.Source)
	case "stats":
		start := d.i
		if err := d.skip(); err != nil {
			return err
		}
		e.Stats = append(json.RawMessage(nil), d.b[start:d.i]...)
		return nil
	case "time":
		return d.time(&e.Time)
	default:
		if name := folded(key, jobResultFields); name != "" {
			return e.field(d, []byte(name))
		}
		return d.skip()
	}
}

// UnmarshalJSON decodes a lease event.
func (e *LeaseEvent) UnmarshalJSON(b []byte) error {
	d := newDecoder(b)
	more, err := d.openObject()
	for first := true; more && err == nil; first = false {
		var key []byte
		if key, more, err = d.key(first); more && err == nil {
			err = e.field(&d, key)
		}
	}
	return d.done("lease_event event", err)
}

var leaseEventFields = []string{"kind", "type", "job_id", "owner", "owner_dc", "token", "at", "index"}

// field decodes the value of member key into e.
func (e *LeaseEvent) field(d *decoder, key []byte) error {
	switch string(key) {
	case "kind":
		return d.str(&e.Kind)
	case "type":
		return d.str(&e.Type)
	case "job_id":
		return d.str(&e.JobID)
	case "owner":
		return d.str(&e.Owner)
	case "owner_dc":
		return d.str(&e.OwnerDC)
	case "token":
		return d.uint(&e.Token)
	case "at":
		return d.time(&e.At)
	case "index":
		return d.uint(&e.Index)
	default:
		if name := folded(key, leaseEventFields); name != "" {
			return e.field(d, []byte(name))
		}
		return d.skip()
	}
}

// Lookup returns the value of member key of the JSON object obj (such as a
// JobResult's Stats), or nil if obj is not a valid object or has no such
// member (the last one if the key repeats, as encoding/json decodes it).
// Nothing but the object's structure is decoded, which makes it much
// cheaper in a guest than json.Unmarshal into a struct or a map:
//
//	if guest.Lookup(ev.Stats, "error") != nil { ... }
//
// The result is a slice of obj.
func Lookup(obj json.RawMessage, key string) json.RawMessage {
	var found json.RawMessage
	d := decoder{b: obj}
	more, err := d.openObject()
	for first := true; more && err == nil; first = false {
		var k []byte
		if k, more, err = d.key(first); !more || err != nil {
			break
		}
		start := d.i
		if err = d.skip(); err == nil && string(k) == key {
			found = obj[start:d.i:d.i]
		}
	}
	if !more && err == nil && d.done("", nil) == nil {
		return found
	}
	return nil
}

// decoder reads JSON from b, at offset i.
type decoder struct {
	b   []byte
	i   int
	s   string // a copy of b, made on the first string, that strings without escapes are sliced from
	buf []byte // scratch for keys and strings with escapes
}

func newDecoder(b []byte) decoder { return decoder{b: b} }

// done returns err, if any, or an error if anything but whitespace follows
// the top-level value, prefixed with what was decoded.
func (d *decoder) done(what string, err error) error {
	if err == nil {
		d.ws()
		if d.i != len(d.b) {
			err = d.errorf("unexpected %q after the top-level value", d.b[d.i])
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

var errEnd = errors.New("unexpected end of JSON")

func (d *decoder) errorf(format string, args ...any) error {
	if d.i >= len(d.b) {
		return errEnd
	}
	return fmt.Errorf("offset %d: "+format, append([]any{d.i}, args...)...)
}

func (d *decoder) ws() {
	// Inlined fast path: the host's events are compact, and a call costs.
	if d.i < len(d.b) && d.b[d.i] > ' ' {
		return
	}
	d.skipSpace()
}

func (d *decoder) skipSpace() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// null consumes a null literal if one is next (after whitespace).
func (d *decoder) null() (bool, error) {
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == 'n' {
		return true, d.literal("null")
	}
	return false, nil
}

func (d *decoder) literal(lit string) error {
	if len(d.b)-d.i < len(lit) || string(d.b[d.i:d.i+len(lit)]) != lit {
		return d.errorf("invalid literal, want %s", lit)
	}
	d.i += len(lit)
	return nil
}

// openObject reads '{' and returns true, or reads null and returns false.
func (d *decoder) openObject() (bool, error) {
	if null, err := d.null(); null || err != nil {
		return false, err
	}
	if d.i >= len(d.b) || d.b[d.i] != '{' {
		return false, d.errorf("want an object")
	}
	d.i++
	return true, nil
}

// key reads the next member's key and the ':' after it (first tells
// whether it is the first member, not preceded by ','), or reads the
// closing '}' and returns false. The key is valid until the next read.
func (d *decoder) key(first bool) (key []byte, more bool, err error) {
	d.ws()
	if d.i >= len(d.b) {
		return nil, false, errEnd
	}
	switch c := d.b[d.i]; {
	case c == '}' && first:
		d.i++
		return nil, false, nil
	case first:
	case c == '}':
		d.i++
		return nil, false, nil
	case c == ',':
		d.i++
		d.ws()
	default:
		return nil, false, d.errorf("want ',' or '}' in an object")
	}
	if key, _, err = d.rawString(); err != nil {
		return nil, false, err
	}
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != ':' {
		return nil, false, d.errorf("want ':' after an object key")
	}
	d.i++
	d.ws()
	return key, true, nil
}

// openArray reads '[' and returns true, or reads null and returns false.
func (d *decoder) openArray() (bool, error) {
	if null, err := d.null(); null || err != nil {
		return false, err
	}
	if d.i >= len(d.b) || d.b[d.i] != '[' {
		return false, d.errorf("want an array")
	}
	d.i++
	return true, nil
}

// elem moves to the next element (first tells whether it is the first, not
// preceded by ','), or reads the closing ']' and returns false.
func (d *decoder) elem(first bool) (more bool, err error) {
	d.ws()
	if d.i >= len(d.b) {
		return false, errEnd
	}
	switch c := d.b[d.i]; {
	case c == ']': // "[1,]" fails in the element after the ','
		d.i++
		return false, nil
	case first:
		return true, nil
	case c == ',':
		d.i++
		d.ws()
		return true, nil
	}
	return false, d.errorf("want ',' or ']' in an array")
}

// str reads a string (or null, which leaves *s unchanged).
func (d *decoder) str(s *string) error {
	if d.i >= len(d.b) || d.b[d.i] != '"' { // the inlined common case: a string
		if null, err := d.null(); null || err != nil {
			return err
		}
	}
	raw, plain, err := d.rawString()
	if err != nil {
		return err
	}
	*s = d.string(raw, plain)
	return nil
}

// string returns raw, just read by rawString, as a string: a slice of d.s
// (one copy of the whole input for all the strings of an event) when raw is
// a slice of the input, a copy otherwise.
func (d *decoder) string(raw []byte, plain bool) string {
	if len(raw) == 0 {
		return ""
	}
	if !plain {
		return string(raw)
	}
	if d.s == "" {
		d.s = string(d.b)
	}
	end := d.i - 1 // the closing quote
	return d.s[end-len(raw) : end]
}

// strings reads an array of strings, or null (which sets *s to nil). An
// empty array gives a non-nil empty slice, as encoding/json does.
func (d *decoder) strings(s *[]string) error {
	more, err := d.openArray()
	if err == nil {
		*s = nil
		if more {
			*s = make([]string, 0, 4) // one allocation for most lists
		}
	}
	for first := true; more && err == nil; first = false {
		if more, err = d.elem(first); !more || err != nil {
			break
		}
		var v string
		if err = d.str(&v); err == nil {
			*s = append(*s, v)
		}
	}
	return err
}

// uint reads a non-negative integer (or null, which leaves *u unchanged).
func (d *decoder) uint(u *uint64) error {
	if null, err := d.null(); null || err != nil {
		return err
	}
	start := d.i
	if err := d.number(); err != nil {
		return err
	}
	v, err := strconv.ParseUint(string(d.b[start:d.i]), 10, 64)
	if err != nil {
		num := string(d.b[start:d.i])
		d.i = start
		return d.errorf("want an unsigned 64-bit integer, got %s", num)
	}
	*u = v
	return nil
}

// time reads an RFC 3339 time string (or null, which leaves *t unchanged)
// as time.Time's UnmarshalJSON does: the text between the quotes, not
// unescaped.
func (d *decoder) time(t *time.Time) error {
	if null, err := d.null(); null || err != nil {
		return err
	}
	start := d.i
	if _, _, err := d.rawString(); err != nil {
		return err
	}
	text := d.b[start+1 : d.i-1]
	if v, ok := parseUTC(text); ok {
		*t = v
		return nil
	}
	if err := t.UnmarshalText(text); err != nil {
		d.i = start
		return d.errorf("%v", err)
	}
	return nil
}

// parseUTC parses the form the host writes, 2006-01-02T15:04:05Z with 0 to
// 9 fractional digits, much more cheaply than time.Parse; ok is false for
// anything else (time.Time's UnmarshalText then decides).
func parseUTC(b []byte) (t time.Time, ok bool) {
	n := len(b)
	if n < 20 || n > 30 || b[n-1] != 'Z' || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return t, false
	}
	num := func(s []byte) int {
		v := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(b[0:4]), num(b[5:7]), num(b[8:10])
	hour, minute, sec := num(b[11:13]), num(b[14:16]), num(b[17:19])
	nsec := 0
	switch {
	case n == 20:
	case n >= 22 && b[19] == '.':
		frac := b[20 : n-1]
		if nsec = num(frac); nsec < 0 {
			return t, false
		}
		for range 9 - len(frac) {
			nsec *= 10
		}
	default:
		return t, false
	}
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return t, false
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// rawString reads a string and returns its decoded bytes: a slice of the
// input when there is nothing to unescape (plain), of d.buf otherwise.
// Valid until the next call.
func (d *decoder) rawString() (raw []byte, plain bool, err error) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false, d.errorf("want a string")
	}
	d.i++
	start := d.i
	// Fast path: plain ASCII up to the closing quote.
	for {
		for d.i+8 <= len(d.b) && plain8(binary.LittleEndian.Uint64(d.b[d.i:])) {
			d.i += 8
		}
		if d.i >= len(d.b) {
			break
		}
		c := d.b[d.i]
		if c == '"' {
			d.i++
			return d.b[start : d.i-1], true, nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		d.i++
	}
	d.buf = append(d.buf[:0], d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return d.buf, false, nil
		case c < 0x20:
			return nil, false, d.errorf("control character %#x in a string", c)
		case c == '\\':
			if err := d.escape(); err != nil {
				return nil, false, err
			}
		case c < utf8.RuneSelf:
			d.buf = append(d.buf, c)
			d.i++
		default:
			r, size := utf8.DecodeRune(d.b[d.i:])
			d.buf = utf8.AppendRune(d.buf, r) // RuneError for invalid UTF-8
			d.i += size
		}
	}
	return nil, false, errEnd
}

// escape decodes the escape sequence at d.i into d.buf.
func (d *decoder) escape() error {
	if d.i+1 >= len(d.b) {
		return errEnd
	}
	c := d.b[d.i+1]
	switch c {
	case '"', '\\', '/':
		d.buf = append(d.buf, c)
	case 'b':
		d.buf = append(d.buf, '\b')
	case 'f':
		d.buf = append(d.buf, '\f')
	case 'n':
		d.buf = append(d.buf, '\n')
	case 'r':
		d.buf = append(d.buf, '\r')
	case 't':
		d.buf = append(d.buf, '\t')
	case 'u':
		r, ok := d.hex4(d.i + 2)
		if !ok {
			return d.errorf("invalid \\u escape")
		}
		d.i += 6
		if utf16.IsSurrogate(r) {
			if r2, ok := d.hex4(d.i + 2); ok && d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					d.i += 6
					r = dec
				} else {
					r = utf8.RuneError
				}
			} else {
				r = utf8.RuneError
			}
		}
		d.buf = utf8.AppendRune(d.buf, r)
		return nil
	default:
		return d.errorf("invalid escape \\%c", c)
	}
	d.i += 2
	return nil
}

// hex4 decodes the four hex digits at b[i:i+4].
func (d *decoder) hex4(i int) (rune, bool) {
	if i+4 > len(d.b) {
		return 0, false
	}
	var r rune
	for _, c := range d.b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a JSON number.
func (d *decoder) number() error {
	b, i := d.b, d.i
	digits := func() bool {
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return d.errorf("want a value")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			d.i = i
			return d.errorf("want a digit after '.'")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			d.i = i
			return d.errorf("want a digit in an exponent")
		}
	}
	d.i = i
	return nil
}

// maxDepth bounds the nesting of values the decoder skips, as
// encoding/json does.
const maxDepth = 10000

// skip reads and validates any JSON value.
func (d *decoder) skip() error {
	return d.skipDepth(0)
}

func (d *decoder) skipDepth(depth int) error {
	if depth > maxDepth {
		return d.errorf("exceeded max depth")
	}
	d.ws()
	if d.i >= len(d.b) {
		return errEnd
	}
	switch d.b[d.i] {
	case '{':
		more, err := d.openObject()
		for first := true; more && err == nil; first = false {
			if _, more, err = d.key(first); more && err == nil {
				err = d.skipDepth(depth + 1)
			}
		}
		return err
	case '[':
		more, err := d.openArray()
		for first := true; more && err == nil; first = false {
			if more, err = d.elem(first); more && err == nil {
				err = d.skipDepth(depth + 1)
			}
		}
		return err
	case '"':
		_, _, err := d.rawString()
		return err
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	return d.number()
}
