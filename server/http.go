package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/coordinatord/coordinatord/engine"
)

// route is one API path: its handlers by method. Methods are dispatched here
// rather than by ServeMux patterns so that a wrong method gets a JSON 405.
type route map[string]handler

// handler serves an authenticated request. Returning an error answers with
// it; a handler that returns nil has written its answer.
type handler func(w http.ResponseWriter, r *http.Request, caller engine.Claims) error

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, rt route) { mux.Handle(pattern, s.serve(rt)) }
	handle("/v1/health", route{http.MethodGet: s.health})
	handle("/v1/ready", route{http.MethodGet: s.ready})
	handle("/metrics", route{http.MethodGet: s.serveMetrics})
	handle("/v1/admission", route{http.MethodPost: s.admission})
	handle("/v1/decisions", route{http.MethodGet: s.decisions})
	// leaderOnly and leaderRead (forward.go) send requests that need the
	// leader to it when this node follows.
	handle("/v1/policies", route{http.MethodGet: s.leaderRead(s.listPolicies)})
	handle("/v1/policies/{id}", route{
		http.MethodGet:    s.leaderRead(s.getPolicy),
		http.MethodPut:    s.leaderOnly(s.putPolicy),
		http.MethodDelete: s.leaderOnly(s.deletePolicy),
	})
	handle("/v1/cluster", route{http.MethodGet: s.leaderRead(s.clusterStatus)})
	handle("/v1/cluster/join", route{http.MethodPost: s.leaderOnly(s.joinCluster)})
	handle("/v1/cluster/members/{id}", route{http.MethodDelete: s.leaderOnly(s.removeMember)})
	s.leaseRoutes(handle)
	s.moduleRoutes(handle)
	s.jobRoutes(handle)
	s.correlationRoutes(handle)
	mux.Handle("/", s.serve(nil))
	return mux
}

// serve authenticates the caller from its certificate, then dispatches on
// the method. A nil route answers 404 to everyone who authenticates.
func (s *Server) serve(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, err := s.authenticate(r)
		if err == nil {
			// A follower forwarding for a client (forward.go).
			caller, r, err = s.forwardedCaller(r, caller)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if rt == nil {
			s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "path",
				"no API at %s %s; the API lives under /v1/ (see the README)", r.Method, r.URL.Path))
			return
		}
		h, ok := rt[r.Method]
		if !ok {
			allowed := make([]string, 0, len(rt))
			for m := range rt {
				allowed = append(allowed, m)
			}
			sort.Strings(allowed)
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			s.writeError(w, r, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "method",
				"%s does not accept %s; allowed: %s", r.URL.Path, r.Method, strings.Join(allowed, ", ")))
			return
		}
		if err := h(w, r, caller); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// connIdentity caches the result of verifying a connection's client
// certificate: chain verification costs far more than a decision, and the
// chain cannot change within one TLS connection.
type connIdentity struct {
	once   sync.Once
	claims engine.Claims
	err    error
}

type connKey struct{}

// connContext attaches an empty connIdentity to each accepted connection.
func connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connIdentity{})
}

// authenticate returns the caller's claims from its verified certificate.
// Expiry is re-checked on every request, because a kept-alive connection can
// outlive the certificate it was opened with.
func (s *Server) authenticate(r *http.Request) (engine.Claims, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return engine.Claims{}, s.identityError(&engine.IdentityError{Defect: engine.ErrNoCertificate, Detail: "the connection presented no client certificate"})
	}
	ci, _ := r.Context().Value(connKey{}).(*connIdentity)
	if ci == nil {
		ci = &connIdentity{}
	}
	ci.once.Do(func() { ci.claims, ci.err = s.verifier.Verify(r.TLS.PeerCertificates) })
	if ci.err != nil {
		return engine.Claims{}, s.identityError(ci.err)
	}
	if now := s.clock(); now.After(ci.claims.NotAfter) {
		return engine.Claims{}, s.identityError(&engine.IdentityError{
			Defect: engine.ErrExpired,
			Detail: fmt.Sprintf("certificate expired at %s (now %s)", ci.claims.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), now.UTC().Format("2006-01-02T15:04:05Z")),
		})
	}
	return ci.claims, nil
}

// identityError turns a rejected certificate into a 401 that names the
// defect and, when there is one, the claim.
func (s *Server) identityError(err error) error {
	ae := errorf(http.StatusUnauthorized, "identity_rejected", "", "%v", err)
	var ie *engine.IdentityError
	if errors.As(err, &ie) {
		ae.e.Code = "identity_" + ie.Code()
		if ie.Claim != "" {
			ae.e.Field = "certificate." + ie.Claim
		} else {
			ae.e.Field = "certificate"
		}
	}
	s.metrics.identityRejections.WithLabelValues(strings.TrimPrefix(ae.e.Code, "identity_")).Inc()
	return ae
}

// authorize asks the admission engine whether caller may do action on this
// node. A denial is a 403 carrying the decision id and the policy's reasons.
func (s *Server) authorize(r *http.Request, caller engine.Claims, action string, resource map[string]any) error {
	d := s.engine.Decide(r.Context(), engine.Input{Source: caller, Target: s.self, Action: action, Resource: resource})
	if d.Allowed {
		return nil
	}
	msg := fmt.Sprintf("%s may not %s", caller.SPIFFEID, action)
	if len(d.Reasons) > 0 {
		msg += ": " + strings.Join(d.Reasons, "; ")
	}
	ae := errorf(http.StatusForbidden, "forbidden", "", "%s", msg)
	ae.e.Reasons, ae.e.DecisionID = d.Reasons, d.ID
	return ae
}

// decodeJSON reads a JSON body strictly: the content type must be JSON, the
// body must fit the limit, unknown fields and trailing data are errors.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if err := requireContentType(r, "application/json"); err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(body, v)
}

func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errorf(http.StatusBadRequest, "empty_body", "body", "the request body is empty; a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "invalid_json", "body", "unexpected data after the JSON object")
	}
	return nil
}

// jsonError names the offending field of a decoding error where it can.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return errorf(http.StatusBadRequest, "invalid_json", "body", "malformed JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ) && typ.Field == "":
		return errorf(http.StatusBadRequest, "invalid_json", "body", "the body must be a JSON object, not JSON %s", typ.Value)
	case errors.As(err, &typ):
		return errorf(http.StatusBadRequest, "invalid_json", typ.Field, "field %q must be %s, not JSON %s", typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this case.
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		name := field
		if name == "" {
			name = "body"
		}
		return errorf(http.StatusBadRequest, "unknown_field", name, "unknown field %q", field)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "invalid_json", "body", "the JSON body ends early")
	default:
		return errorf(http.StatusBadRequest, "invalid_json", "body", "%v", err)
	}
}

// readBody reads the whole body up to the configured limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "body_too_large", "body",
				"the request body exceeds the limit of %d bytes", tooLarge.Limit)
		}
		return nil, errorf(http.StatusBadRequest, "unreadable_body", "body", "reading the request body: %v", err)
	}
	return body, nil
}

func requireContentType(r *http.Request, allowed ...string) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, a := range allowed {
			if mt == a {
				return nil
			}
		}
	}
	if ct == "" {
		ct = "none"
	}
	return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type",
		"Content-Type %s is not accepted here; use %s", ct, strings.Join(allowed, " or "))
}
