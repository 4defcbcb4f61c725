package raftstore

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/coordinatord/coordinatord/policies"
)

func TestPolicyWritesInSequence(t *testing.T) {
	rec := &recorder{}
	cfg := testConfig(t, t.TempDir())
	cfg.OnPoliciesChanged = rec.record
	s := openStore(t, cfg)

	rev := func(n uint64) *uint64 { return &n }
	changed := pol("a", policies.ModeEnforce)
	changed.Rego = testRego + "# v2\n"
	withSlash := pol("x/y", policies.ModeAudit)
	badMode := pol("d", "block")
	unstamped := pol("d", policies.ModeEnforce)
	unstamped.UpdatedAt = time.Time{}

	// Each step runs on the state the previous ones left, like an
	// operator's session; wantRev is the policy-set revision after it.
	steps := []struct {
		name    string
		put     *policies.Policy
		expect  *uint64
		del     string
		wantErr error
		wantRev uint64
		wantVer uint64
	}{
		{name: "the first policy gets revision 1 and version 1", put: new(pol("a", policies.ModeEnforce)), wantRev: 1, wantVer: 1},
		{name: "a second policy moves the set revision but starts its own version at 1", put: new(pol("b", policies.ModeAudit)), wantRev: 2, wantVer: 1},
		{name: "replacing a policy bumps its version", put: &changed, wantRev: 3, wantVer: 2},
		{name: "a stale expected revision is a conflict and changes nothing", put: new(pol("c", policies.ModeEnforce)), expect: rev(1), wantErr: ErrConflict, wantRev: 3},
		{name: "the current expected revision succeeds", put: new(pol("c", policies.ModeEnforce)), expect: rev(3), wantRev: 4, wantVer: 1},
		{name: "seeding with expected revision 0 is refused once anything was written", put: new(pol(policies.DefaultID, policies.ModeEnforce)), expect: rev(0), wantErr: ErrConflict, wantRev: 4},
		{name: "deleting a missing policy is not found", del: "zz", wantErr: ErrNotFound, wantRev: 4},
		{name: "deleting one of two enforcing policies succeeds", del: "c", wantRev: 5},
		{name: "deleting the last enforcing policy is refused", del: "a", wantErr: ErrLastEnforcingPolicy, wantRev: 5},
		{name: "switching the last enforcing policy to audit is refused", put: new(pol("a", policies.ModeAudit)), wantErr: ErrLastEnforcingPolicy, wantRev: 5},
		{name: "deleting an audit policy succeeds", del: "b", wantRev: 6},
		{name: "a re-created id continues its version count", put: new(pol("c", policies.ModeAudit)), wantRev: 7, wantVer: 2},
		{name: "an unknown mode is rejected", put: &badMode, wantErr: ErrInvalid, wantRev: 7},
		{name: "an unstamped time is rejected", put: &unstamped, wantErr: ErrInvalid, wantRev: 7},
		{name: "an id with a slash is rejected", put: &withSlash, wantErr: ErrInvalid, wantRev: 7},
		{name: "deleting with an empty id is rejected", del: "", wantErr: ErrInvalid, wantRev: 7},
	}
	for _, st := range steps {
		var err error
		switch {
		case st.put != nil:
			var got policies.Policy
			got, err = s.PutPolicy(tctx(t), *st.put, st.expect)
			if err == nil {
				want := *st.put
				want.Revision, want.Version = st.wantRev, st.wantVer
				if !samePolicies([]policies.Policy{got}, []policies.Policy{want}) {
					t.Errorf("%s: PutPolicy returned %+v, want %+v", st.name, got, want)
				}
				stored, gerr := s.Policy(got.ID)
				if gerr != nil || !samePolicies([]policies.Policy{stored}, []policies.Policy{got}) {
					t.Errorf("%s: Policy(%s) = %+v, %v; want %+v", st.name, got.ID, stored, gerr, got)
				}
			}
		default:
			var newRev uint64
			newRev, err = s.DeletePolicy(tctx(t), st.del, t0)
			if err == nil && newRev != st.wantRev {
				t.Errorf("%s: DeletePolicy returned revision %d, want %d", st.name, newRev, st.wantRev)
			}
		}
		if !errors.Is(err, st.wantErr) || (err != nil) != (st.wantErr != nil) {
			t.Errorf("%s: error %v, want %v", st.name, err, st.wantErr)
		}
		if got := s.PolicyRevision(); got != st.wantRev {
			t.Errorf("%s: PolicyRevision %d, want %d", st.name, got, st.wantRev)
		}
	}

	list, gotRev, err := s.Policies()
	if err != nil {
		t.Fatal(err)
	}
	if gotRev != 7 {
		t.Errorf("Policies revision %d, want 7", gotRev)
	}
	wantA := changed
	wantA.Revision, wantA.Version = 3, 2
	wantC := pol("c", policies.ModeAudit)
	wantC.Revision, wantC.Version = 7, 2
	if want := []policies.Policy{wantA, wantC}; !samePolicies(list, want) {
		t.Errorf("Policies = %+v\nwant %+v", list, want)
	}
	if _, err := s.Policy("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Policy(b) after delete: %v, want ErrNotFound", err)
	}
	// One call at open, then one per successful write, in commit order.
	if got, want := rec.revisions(), []uint64{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Errorf("OnPoliciesChanged revisions %v, want %v", got, want)
	}
	if last := rec.lastSet(); !samePolicies(last, list) {
		t.Errorf("last OnPoliciesChanged set %+v, want %+v", last, list)
	}
}

func TestSeedingTheDefaultPolicyHappensOnce(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	def := pol(policies.DefaultID, policies.ModeEnforce)

	got, err := s.PutPolicy(tctx(t), def, new(uint64(0)))
	if err != nil {
		t.Fatalf("first seed: %v", err)
	}
	if got.Revision != 1 || got.Version != 1 {
		t.Errorf("seeded revision %d version %d, want 1 and 1", got.Revision, got.Version)
	}
	_, err = s.PutPolicy(tctx(t), def, new(uint64(0)))
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Expected != 0 || conflict.Current != 1 {
		t.Fatalf("second seed: %v, want *ConflictError{0, 1}", err)
	}
	if !errors.Is(err, ErrConflict) {
		t.Errorf("second seed error %v does not match ErrConflict", err)
	}
	if p, _ := s.Policy(policies.DefaultID); p.Version != 1 {
		t.Errorf("default policy version %d after refused seed, want 1", p.Version)
	}
}

func TestAnAuditPolicyMayBeTheFirst(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	// The last-enforcing rule forbids dropping from one enforce policy to
	// none; it must not forbid starting without one.
	mustPut(t, s, pol("dry-run", policies.ModeAudit))
	if _, err := s.DeletePolicy(tctx(t), "dry-run", t0); err != nil {
		t.Fatalf("deleting the only, audit-mode policy: %v", err)
	}
}
