package abi

import "testing"

func TestAllocReusesAndShrinks(t *testing.T) {
	inputBuffer = nil
	b := alloc(10)
	if len(b) < 10 || cap(b) != minBuffer {
		t.Fatalf("alloc(10): len %d cap %d", len(b), cap(b))
	}
	first := &b[0]
	for _, n := range []int32{0, 1, 100, minBuffer} {
		if b := alloc(n); &b[0] != first {
			t.Errorf("alloc(%d) did not reuse the buffer", n)
		}
	}
	big := alloc(4 << 20)
	if len(big) < 4<<20 || &big[0] == first {
		t.Fatalf("alloc(4 MiB): len %d", len(big))
	}
	if b := alloc(2 << 20); &b[0] != &big[0] {
		t.Errorf("alloc(2 MiB) after 4 MiB did not reuse the buffer")
	}
	if b := alloc(100); cap(b) != minBuffer {
		t.Errorf("alloc(100) after a 4 MiB event kept a buffer of %d bytes", cap(b))
	}
	if alloc(-1) != nil {
		t.Errorf("alloc(-1) returned a buffer")
	}
}

func TestInput(t *testing.T) {
	inputBuffer = nil
	alloc(10)
	const base = 1000
	if in := input(base, 10, base); len(in) != 10 {
		t.Errorf("input at the buffer: %d bytes", len(in))
	}
	if input(base+1, 10, base) != nil || input(base, minBuffer+1, base) != nil {
		t.Errorf("input outside the buffer accepted")
	}
}
