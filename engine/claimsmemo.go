package engine

import (
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// claimsMemoSize bounds the remembered identities. Peers are few and each
// asks many times, so a small memo answers nearly every lookup.
const claimsMemoSize = 4096

// claimsMemo maps claims to their Rego term. Building the term allocates a
// dozen objects, a third of an uncached decision; AST values are never
// modified by evaluation, so one term can serve concurrent decisions.
type claimsMemo struct {
	mu    sync.RWMutex // guards terms
	terms map[Claims]*ast.Term
	max   int
}

func newClaimsMemo(max int) *claimsMemo {
	return &claimsMemo{terms: make(map[Claims]*ast.Term), max: max}
}

func (m *claimsMemo) get(c Claims) *ast.Term {
	// Equal instants in different locations or with monotonic readings are
	// different map keys; normalise so that they hit.
	c.NotAfter = c.NotAfter.Round(0).UTC()
	m.mu.RLock()
	t, ok := m.terms[c]
	m.mu.RUnlock()
	if ok {
		return t
	}
	t = ast.NewTerm(claimsValue(c))
	m.mu.Lock()
	if len(m.terms) >= m.max {
		clear(m.terms)
	}
	m.terms[c] = t
	m.mu.Unlock()
	return t
}

func claimsValue(c Claims) ast.Value {
	items := [][2]*ast.Term{
		ast.Item(ast.StringTerm("cluster"), ast.StringTerm(c.Cluster)),
		ast.Item(ast.StringTerm("env"), ast.StringTerm(c.Env)),
		ast.Item(ast.StringTerm("role"), ast.StringTerm(string(c.Role))),
		ast.Item(ast.StringTerm("datacenter"), ast.StringTerm(c.Datacenter)),
		ast.Item(ast.StringTerm("node"), ast.StringTerm(c.Node)),
		ast.Item(ast.StringTerm("spiffe_id"), ast.StringTerm(c.SPIFFEID)),
		ast.Item(ast.StringTerm("serial"), ast.StringTerm(c.Serial)),
	}
	if !c.NotAfter.IsZero() {
		items = append(items, ast.Item(ast.StringTerm("not_after"), ast.StringTerm(c.NotAfter.UTC().Format(time.RFC3339))))
	}
	if c.Region != "" {
		items = append(items, ast.Item(ast.StringTerm("region"), ast.StringTerm(c.Region)))
	}
	return ast.NewObject(items...)
}
