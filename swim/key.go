package swim

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/hashicorp/memberlist"
)

// KeySize is the size of the keys GenerateKey makes: 32 bytes, AES-256.
const KeySize = 32

// GenerateKey returns a new random gossip key of KeySize bytes from
// crypto/rand.
func GenerateKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("swim: generate key: %w", err)
	}
	return k, nil
}

// EncodeKey returns the standard base64 form of a key, the form ParseKey
// reads (and `coordinatord keygen` prints).
func EncodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// ParseKey decodes a base64 gossip key (surrounding whitespace, such as the
// newline at the end of a key file, is ignored) and checks its length: 16,
// 24 or 32 bytes select AES-128, AES-192 or AES-256. The error wraps
// ErrInvalidKey and never contains the key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not standard base64 (make one with `coordinatord keygen`)", ErrInvalidKey)
	}
	if err := validateKey(k); err != nil {
		return nil, err
	}
	return k, nil
}

func validateKey(k []byte) error {
	if err := memberlist.ValidateKey(k); err != nil {
		return fmt.Errorf("%w: %d bytes, must be 16, 24 or 32", ErrInvalidKey, len(k))
	}
	return nil
}
