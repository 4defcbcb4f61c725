package raftstore

import (
	"errors"
	"testing"
	"time"
)

func TestMembersRegistry(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	m := Member{ID: "n1", RaftAddr: "n1", HTTPAddr: "127.0.0.1:8443", Datacenter: "dc1", JoinedAt: t0}
	if _, err := s.Member("n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Member before any write = %v, want ErrNotFound", err)
	}
	got, err := s.PutMember(tctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	if got != m {
		t.Fatalf("PutMember = %+v, want %+v", got, m)
	}
	if ms, err := s.Members(); err != nil || len(ms) != 1 || !ms[0].JoinedAt.Equal(t0) {
		t.Fatalf("Members = %+v, %v", ms, err)
	}
	if err := s.DeleteMember(tctx(t), "n1", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMember(tctx(t), "n1", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteMember = %v, want ErrNotFound", err)
	}
	if _, err := s.PutMember(tctx(t), Member{ID: "n2", JoinedAt: t0}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("PutMember without addresses = %v, want ErrInvalid", err)
	}
}

func TestMembersSurviveASnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	if _, err := s.PutMember(tctx(t), Member{ID: "n1", RaftAddr: "n1", HTTPAddr: "h:1", JoinedAt: t0}); err != nil {
		t.Fatal(err)
	}
	snap, err := s.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if err := s.DeleteMember(tctx(t), "n1", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.fsm.restore(&sink); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Member("n1"); err != nil || m.HTTPAddr != "h:1" {
		t.Fatalf("Member after restore = %+v, %v", m, err)
	}
}

func TestAddMemberIsIdempotentAndRefusesConflicts(t *testing.T) {
	p := newTPKI(t)
	n1 := p.openNode(t, "n1", true)
	n2 := p.openNode(t, "n2", false)
	m2 := n2.member("n2")
	if _, existing, err := n1.store.AddMember(tctx(t), m2); err != nil || existing {
		t.Fatalf("first AddMember = existing %v, %v", existing, err)
	}
	later := m2
	later.JoinedAt = t0.Add(time.Hour)
	got, existing, err := n1.store.AddMember(tctx(t), later)
	if err != nil || !existing || !got.JoinedAt.Equal(t0) {
		t.Fatalf("repeated AddMember = %+v, existing %v, %v; want the first record back", got, existing, err)
	}
	before := n1.store.LastIndex()
	cases := []struct {
		name string
		m    Member
	}{
		{"the same id at another raft address", Member{ID: "n2", RaftAddr: "127.0.0.1:1", HTTPAddr: m2.HTTPAddr, JoinedAt: t0}},
		{"the same id at another HTTP address", Member{ID: "n2", RaftAddr: m2.RaftAddr, HTTPAddr: "elsewhere:1", Datacenter: "dc1", JoinedAt: t0}},
		{"another id at a used raft address", Member{ID: "n3", RaftAddr: m2.RaftAddr, HTTPAddr: "n3:1", JoinedAt: t0}},
		{"another id at a used HTTP address", Member{ID: "n3", RaftAddr: "127.0.0.1:2", HTTPAddr: m2.HTTPAddr, JoinedAt: t0}},
	}
	for _, tc := range cases {
		_, _, err := n1.store.AddMember(tctx(t), tc.m)
		var ce *MemberConflictError
		if !errors.Is(err, ErrMemberConflict) || !errors.As(err, &ce) {
			t.Errorf("%s: AddMember = %v, want ErrMemberConflict", tc.name, err)
		}
	}
	if after := n1.store.LastIndex(); after != before {
		t.Errorf("refused joins wrote to the log: last index %d -> %d", before, after)
	}
	_, _, err = n1.store.AddMember(tctx(t), Member{ID: "n4", RaftAddr: "127.0.0.1:9", HTTPAddr: "n4:1", JoinedAt: t0})
	if !errors.Is(err, ErrPeerUnreachable) {
		t.Errorf("AddMember of a node nobody answers for = %v, want ErrPeerUnreachable", err)
	}
}

func TestRemoveMember(t *testing.T) {
	p := newTPKI(t)
	n1 := p.openNode(t, "n1", true)
	n2 := p.openNode(t, "n2", false)
	if _, _, err := n1.store.AddMember(tctx(t), n2.member("n2")); err != nil {
		t.Fatal(err)
	}
	if err := n1.store.RemoveMember(tctx(t), "n2", t0); err != nil {
		t.Fatal(err)
	}
	servers, err := n1.store.Configuration(tctx(t))
	if err != nil || len(servers) != 1 || servers[0].ID != "n1" {
		t.Fatalf("configuration after removal = %+v, %v", servers, err)
	}
	if _, err := n1.store.Member("n2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("registry after removal: %v, want ErrNotFound", err)
	}
	if err := n1.store.RemoveMember(tctx(t), "n2", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second removal = %v, want ErrNotFound", err)
	}
	if err := n1.store.RemoveMember(tctx(t), "n1", t0); !errors.Is(err, ErrLastVoter) {
		t.Fatalf("removing the last voter = %v, want ErrLastVoter", err)
	}
}
