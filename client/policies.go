package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/coordinatord/coordinatord/api"
)

// PutPolicy writes policy id. mode is "enforce" (the default when empty) or
// "audit". ifRevision, when non-nil, makes the write conditional on the
// current policy-set revision.
func (c *Client) PutPolicy(ctx context.Context, id, rego, mode string, ifRevision *uint64) (*api.Policy, error) {
	body, err := jsonBody(api.PutPolicyRequest{Rego: rego, Mode: mode})
	if err != nil {
		return nil, err
	}
	req := request{method: http.MethodPut, path: "/v1/policies/" + url.PathEscape(id), contentType: "application/json", body: body}
	if ifRevision != nil {
		req.header = http.Header{"If-Match": {strconv.FormatUint(*ifRevision, 10)}}
	}
	var out api.Policy
	if err := c.do(ctx, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetPolicy reads policy id with its Rego source.
func (c *Client) GetPolicy(ctx context.Context, id string) (*api.Policy, error) {
	var out api.Policy
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/policies/" + url.PathEscape(id)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListPolicies lists the policies (without their sources).
func (c *Client) ListPolicies(ctx context.Context) (*api.PolicyList, error) {
	var out api.PolicyList
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/policies"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeletePolicy deletes policy id.
func (c *Client) DeletePolicy(ctx context.Context, id string) (*api.DeletePolicyResponse, error) {
	var out api.DeletePolicyResponse
	if err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/policies/" + url.PathEscape(id)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
