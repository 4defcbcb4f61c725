package client

import (
	"context"
	"net/http"

	"github.com/coordinatord/coordinatord/api"
)

// Datacenters calls GET /v1/datacenters: the committed correlation state
// (datacenter states, severity, episode, held datacenters and leases,
// recent events) and the answering node's own gossip view. Any node
// answers; it does not forward to the leader.
func (c *Client) Datacenters(ctx context.Context) (*api.Datacenters, error) {
	var out api.Datacenters
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/datacenters"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GossipMembers calls GET /v1/members: the gossip pool as the answering
// node sees it.
func (c *Client) GossipMembers(ctx context.Context) (*api.GossipMembers, error) {
	var out api.GossipMembers
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/members"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
