package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/coordinatord/coordinatord/api"
)

// apiError is an error answer: {"error": {"code", "message", "field", ...}}.
type apiError struct {
	e api.Error
	// retryAfter, when set, becomes the Retry-After header.
	retryAfter time.Duration
}

func (a *apiError) Error() string { return a.e.Error() }

func errorf(status int, code, field, format string, args ...any) *apiError {
	return &apiError{e: api.Error{Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}}
}

// writeError answers with err as a JSON error. Errors that are not
// *apiError are internal: their text is logged in full and returned too,
// because operators debugging a cluster need it more than secrecy from
// already-authenticated callers.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = errorf(http.StatusInternalServerError, "internal", "", "%v", err)
	}
	level := slog.LevelInfo
	if ae.e.Status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed",
		"method", r.Method, "path", r.URL.Path, "status", ae.e.Status,
		"code", ae.e.Code, "field", ae.e.Field, "error", ae.e.Message, "remote", r.RemoteAddr)
	if ae.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((ae.retryAfter+time.Second-1)/time.Second)))
	}
	s.writeJSON(w, r, ae.e.Status, api.ErrorBody{Error: &ae.e})
}

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encode response", "path", r.URL.Path, "error", err)
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"code":"internal","message":"response could not be encoded"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if _, err := w.Write(append(body, '\n')); err != nil {
		s.log.Debug("write response", "path", r.URL.Path, "error", err)
	}
}
