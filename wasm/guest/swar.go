package guest

// Eight bytes at a time: in a Wasm guest every loop iteration is costly (the
// host checks for cancellation at each), so the decoder and the encoder skip
// plain string bytes a word at a time.

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// plain8 reports whether none of the 8 bytes of v is '"', '\\', a control
// character (< 0x20) or non-ASCII (>= 0x80): bytes a JSON string holds as
// they are.
func plain8(v uint64) bool {
	ctl := (v - 0x20*lsb) & ^v // high bit set in a byte < 0x20
	q := v ^ ('"' * lsb)       // zero byte where '"'
	q = (q - lsb) & ^q         //
	bs := v ^ ('\\' * lsb)     // zero byte where '\\'
	bs = (bs - lsb) & ^bs      //
	return (v|ctl|q|bs)&msb == 0
}

// load64 returns the 8 bytes of s at i, little-endian (one load in Wasm).
func load64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
