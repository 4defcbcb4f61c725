package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/coordinatord/coordinatord/api"
	"github.com/coordinatord/coordinatord/engine"
	"github.com/coordinatord/coordinatord/raftstore"
	"github.com/coordinatord/coordinatord/wasm"
)

// moduleRoutes registers the module API. Writes go to the leader, reads
// to the leader unless ?stale=true; an invoke is served by the node that
// receives it, so that an author can try each node's instance.
func (s *Server) moduleRoutes(handle func(string, route)) {
	handle("/v1/modules", route{http.MethodGet: s.leaderRead(s.listModules)})
	handle("/v1/modules/{name}", route{
		http.MethodGet:    s.leaderRead(s.getModule),
		http.MethodPut:    s.leaderOnly(s.putModule),
		http.MethodDelete: s.leaderOnly(s.deleteModule),
	})
	handle("/v1/modules/{name}/invoke", route{http.MethodPost: s.invokeModule})
}

// moduleName authorises action on the module named in the path and checks
// the name.
func (s *Server) moduleName(r *http.Request, caller engine.Claims, action string) (string, error) {
	name := r.PathValue("name")
	if err := s.authorize(r, caller, action, map[string]any{"kind": "module", "name": name}); err != nil {
		return "", err
	}
	if err := raftstore.ValidateModuleName(name); err != nil {
		return "", errorf(http.StatusBadRequest, "invalid_name", "name",
			"module name %q must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", name)
	}
	return name, nil
}

func (s *Server) moduleToAPI(m raftstore.Module) (api.Module, error) {
	out := api.Module{
		Name: m.Name, Digest: m.Digest, Size: m.Size, Version: m.Version, Revision: m.Revision,
		UpdatedAt: m.UpdatedAt, UpdatedBy: m.UpdatedBy, Node: s.modules.nodeState(m),
	}
	if err := json.Unmarshal(m.Manifest, &out.Manifest); err != nil {
		return out, fmt.Errorf("module %q: stored manifest: %w", m.Name, err)
	}
	return out, nil
}

func (s *Server) listModules(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	if err := s.authorize(r, caller, "module.read", map[string]any{"kind": "module"}); err != nil {
		return err
	}
	if err := s.readConsistency(r, "stale"); err != nil {
		return err
	}
	ms, rev, err := s.store.Modules()
	if err != nil {
		return storeError(err, "", "")
	}
	out := api.ModuleList{Revision: rev, Node: s.cfg.NodeID, Modules: make([]api.Module, 0, len(ms))}
	for _, m := range ms {
		am, err := s.moduleToAPI(m)
		if err != nil {
			return err
		}
		out.Modules = append(out.Modules, am)
	}
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

func (s *Server) getModule(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	name, err := s.moduleName(r, caller, "module.read")
	if err != nil {
		return err
	}
	if err := s.readConsistency(r, "stale", "download"); err != nil {
		return err
	}
	download := false
	if v := r.URL.Query().Get("download"); v != "" {
		if download, err = strconv.ParseBool(v); err != nil {
			return errorf(http.StatusBadRequest, "invalid_query", "download", "download must be true or false, got %q", v)
		}
	}
	m, err := s.store.Module(name)
	if err != nil {
		return storeError(err, "module", name)
	}
	if !download {
		am, err := s.moduleToAPI(m)
		if err != nil {
			return err
		}
		w.Header().Set("ETag", strconv.FormatUint(m.Version, 10))
		s.writeJSON(w, r, http.StatusOK, am)
		return nil
	}
	wasmBytes, err := s.store.ModuleBytes(m.Digest)
	if err != nil {
		// Replaced between the two reads: the client asks again.
		return storeError(err, "module", name)
	}
	h := w.Header()
	h.Set("Content-Type", "application/wasm")
	h.Set("Content-Length", strconv.Itoa(len(wasmBytes)))
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name+".wasm"))
	h.Set("ETag", strconv.FormatUint(m.Version, 10))
	h.Set("X-Module-Digest", m.Digest)
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(wasmBytes); err != nil {
		s.log.Debug("write module download", "module", name, "error", err)
	}
	return nil
}

// putModule checks the manifest, reads the bytes and validates them in the
// sandbox (it compiles them) before anything is written: a module that
// would not load never reaches the log. On success it waits until this
// node runs the new version, so that an invoke right after sees it.
func (s *Server) putModule(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	name, err := s.moduleName(r, caller, "module.write")
	if err != nil {
		return err
	}
	if err := checkQuery(r, manifestParams...); err != nil {
		return err
	}
	pm, err := manifestFromQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if err := requireContentType(r, "application/wasm", "application/octet-stream"); err != nil {
		return err
	}
	expect, err := moduleIfMatch(r)
	if err != nil {
		return err
	}
	body, err := s.readModuleBody(w, r)
	if err != nil {
		return err
	}
	info, err := s.sandbox.Validate(r.Context(), pm.kind, body)
	if err == nil {
		err = wasm.CheckLimits(info, pm.limits)
	}
	if err != nil {
		return moduleError(err)
	}
	manifest, err := json.Marshal(pm.manifest)
	if err != nil {
		return err
	}
	rec := raftstore.Module{Name: name, Manifest: manifest, UpdatedAt: s.clock(), UpdatedBy: caller.SPIFFEID}
	stored, err := s.store.PutModule(r.Context(), rec, body, expect)
	if err != nil {
		return moduleStoreError(err, name)
	}
	s.log.Info("module written", "module", name, "digest", stored.Digest, "version", stored.Version,
		"module_revision", stored.Revision, "kind", pm.manifest.Kind, "size", stored.Size, "by", caller.SPIFFEID)
	s.waitInstalled(r.Context(), stored.Revision)
	out, err := s.moduleToAPI(stored)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", strconv.FormatUint(stored.Version, 10))
	s.writeJSON(w, r, http.StatusOK, out)
	return nil
}

// waitInstalled waits, bounded, until this node's installer has caught up
// with revision rev. A slow install is not an error of the write, which is
// committed: the answer's node state then says "installing".
func (s *Server) waitInstalled(ctx context.Context, rev uint64) {
	ctx, cancel := context.WithTimeout(ctx, moduleInstallWait)
	defer cancel()
	if err := s.modules.waitFor(ctx, rev); err != nil {
		s.log.Warn("module write answered before this node installed it", "module_revision", rev, "error", err)
	}
}

// readModuleBody reads an upload's bytes up to MaxModuleBytes.
func (s *Server) readModuleBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > s.cfg.MaxModuleBytes {
		return nil, moduleTooLarge(r.ContentLength, s.cfg.MaxModuleBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxModuleBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, moduleTooLarge(-1, tooLarge.Limit)
		}
		return nil, errorf(http.StatusBadRequest, "unreadable_body", "wasm", "reading the module: %v", err)
	}
	if len(body) == 0 {
		return nil, errorf(http.StatusBadRequest, "empty_body", "wasm", "the request body is empty; send the module's bytes (Content-Type: application/wasm)")
	}
	return body, nil
}

func moduleTooLarge(size, limit int64) error {
	if size >= 0 {
		return errorf(http.StatusRequestEntityTooLarge, "module_too_large", "wasm", "the module is %d bytes, more than this cluster's limit of %d (--max-module-bytes)", size, limit)
	}
	return errorf(http.StatusRequestEntityTooLarge, "module_too_large", "wasm", "the module is larger than this cluster's limit of %d bytes (--max-module-bytes)", limit)
}

// moduleError turns a sandbox validation error into a 4xx naming the
// field at fault, with the defect's stable code.
func moduleError(err error) error {
	var (
		me *wasm.ModuleError
		le *wasm.LimitsError
	)
	switch {
	case errors.As(err, &le):
		return limitsError(err)
	case errors.As(err, &me):
		status, field := http.StatusBadRequest, "wasm"
		switch {
		case errors.Is(err, wasm.ErrTooLarge):
			status = http.StatusRequestEntityTooLarge
		case errors.Is(err, wasm.ErrMemoryOverLimit):
			field = "memory_pages"
		case errors.Is(err, wasm.ErrUnknownKind):
			field = "kind"
		case errors.Is(err, wasm.ErrInvalidName):
			field = "name"
		}
		return errorf(status, me.Code(), field, "%v", err)
	}
	return err
}

// moduleIfMatch reads an optional If-Match precondition on the module's
// version (0: the name must be free).
func moduleIfMatch(r *http.Request) (*uint64, error) {
	h := strings.Trim(r.Header.Get("If-Match"), `" `)
	if h == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(h, 10, 64)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "invalid_header", "If-Match", "If-Match must be the module's current version number, got %q", h)
	}
	return &v, nil
}

func moduleStoreError(err error, name string) error {
	var ce *raftstore.ConflictError
	if errors.As(err, &ce) {
		return errorf(http.StatusPreconditionFailed, "version_mismatch", "If-Match",
			"module %q is at version %d, not %d", name, ce.Current, ce.Expected)
	}
	return storeError(err, "module", name)
}

func (s *Server) deleteModule(w http.ResponseWriter, r *http.Request, caller engine.Claims) error {
	name, err := s.moduleName(r, caller, "module.write")
	if err != nil {
		return err
	}
	if err := checkQuery(r); err != nil {
		return err
	}
	rev, err := s.store.DeleteModule(r.Context(), name, s.clock())
	if err != nil {
		return moduleStoreError(err, name)
	}
	s.log.Info("module deleted", "module", name, "module_revision", rev, "by", caller.SPIFFEID)
	s.waitInstalled(r.Context(), rev)
	s.writeJSON(w, r, http.StatusOK, api.DeleteModuleResponse{Name: name, Deleted: true, Revision: rev})
	return nil
}
