package engine

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
)

// decisionCache remembers outcomes by (claims, action, resource, policy
// revision). Because the revision is part of the key, a stale entry can
// never answer for a newer policy set; reset on load only frees memory.
type decisionCache struct {
	mu      sync.RWMutex // guards entries
	entries map[string]outcome
	max     int
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{entries: make(map[string]outcome, max), max: max}
}

func (c *decisionCache) get(key string) (outcome, bool) {
	c.mu.RLock()
	o, ok := c.entries[key]
	c.mu.RUnlock()
	return o, ok
}

// put stores o. A full cache is emptied rather than evicted entry by entry:
// peers' identities are few and stable, so refilling is cheap and the
// bookkeeping of an LRU would cost every hit.
func (c *decisionCache) put(key string, o outcome) {
	c.mu.Lock()
	if len(c.entries) >= c.max {
		clear(c.entries)
	}
	c.entries[key] = o
	c.mu.Unlock()
}

func (c *decisionCache) reset() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}

// cacheKey encodes every field a policy can see. Fields are separated by a
// byte that claim values cannot contain (the parser restricts their
// characters), so two different inputs never share a key.
func cacheKey(revision uint64, in Input) string {
	var b strings.Builder
	b.Grow(256)
	b.WriteString(strconv.FormatUint(revision, 10))
	writeClaims(&b, &in.Source)
	writeClaims(&b, &in.Target)
	b.WriteByte(0)
	b.WriteString(in.Action)
	if in.Resource != nil {
		b.WriteByte(0)
		// Maps marshal with sorted keys, so equal resources give equal keys.
		if raw, err := json.Marshal(in.Resource); err == nil {
			b.Write(raw)
		} else {
			// Unencodable resources never hit the cache: a unique key.
			b.WriteString("\x01unencodable")
		}
	}
	return b.String()
}

func writeClaims(b *strings.Builder, c *Claims) {
	for _, s := range [...]string{c.Cluster, c.Env, string(c.Role), c.Datacenter, c.Node, c.Region, c.SPIFFEID, c.Serial} {
		b.WriteByte(0)
		b.WriteString(s)
	}
	b.WriteByte(0)
	b.WriteString(strconv.FormatInt(c.NotAfter.Unix(), 10))
}
