package swim

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestMetaIsCompactJSONThatRoundTrips(t *testing.T) {
	m := Meta{NodeID: "node-1", Datacenter: "eu-west-1a", Role: RoleCoordinator, Version: "1.2.3"}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"node-1","dc":"eu-west-1a","role":"coordinator","v":"1.2.3"}`; string(b) != want {
		t.Errorf("encoded %s, want %s", b, want)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Errorf("decoded %+v, %v; want %+v", got, err, m)
	}
}

func TestDecodeMeta(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // error substring, "" for success
	}{
		{"unknown keys from a newer version are ignored", `{"id":"a","dc":"d","role":"agent","v":"9","zone":"z"}`, ""},
		{"an unknown role from a newer version is accepted", `{"id":"a","dc":"d","role":"gateway","v":"9"}`, ""},
		{"no metadata at all is refused", ``, "no metadata"},
		{"metadata that is not JSON is refused", `node-a`, "invalid member metadata"},
		{"metadata without a datacenter is refused", `{"id":"a","role":"agent","v":"1"}`, "Datacenter is empty"},
		{"metadata without a node id is refused", `{"dc":"d","role":"agent","v":"1"}`, "NodeID is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMeta([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidMeta) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want ErrInvalidMeta mentioning %q", err, tt.want)
			}
		})
	}
}

func TestAliveDelegateAdmitsOnlyDecodableMetadata(t *testing.T) {
	if err := (aliveDelegate{}).NotifyAlive(nodeWithMeta(`{"id":"a","dc":"d","role":"agent","v":"1"}`)); err != nil {
		t.Errorf("valid metadata refused: %v", err)
	}
	if err := (aliveDelegate{}).NotifyAlive(nodeWithMeta(``)); err == nil {
		t.Error("a member without metadata was admitted")
	}
}

func TestParseKey(t *testing.T) {
	k, err := GenerateKey()
	if err != nil || len(k) != KeySize {
		t.Fatalf("GenerateKey: %d bytes, %v", len(k), err)
	}
	k2, _ := GenerateKey()
	if bytes.Equal(k, k2) {
		t.Fatal("two generated keys are equal")
	}
	if got, err := ParseKey(EncodeKey(k) + "\n"); err != nil || !bytes.Equal(got, k) {
		t.Errorf("ParseKey(EncodeKey(k)+newline) = %x, %v", got, err)
	}
	for _, bad := range []string{"", "not base64!", EncodeKey(make([]byte, 20))} {
		if _, err := ParseKey(bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParseKey(%q): %v, want ErrInvalidKey", bad, err)
		}
	}
}

func TestMemberlistLogLinesBecomeSlogRecordsAtTheirLevel(t *testing.T) {
	var buf bytes.Buffer
	l := newStdLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})))
	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:4000")
	l.Printf("[INFO] memberlist: Suspect x has failed, no acks received")
	l.Printf("[WARN] memberlist: Refuting a suspect message (from: y)")
	l.Printf("[ERR] memberlist: Failed to send ping: boom")
	l.Printf("no level at all")
	want := `level=DEBUG msg="Stream connection from=127.0.0.1:4000"
level=INFO msg="Suspect x has failed, no acks received"
level=WARN msg="Refuting a suspect message (from: y)"
level=ERROR msg="Failed to send ping: boom"
level=INFO msg="no level at all"
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}
