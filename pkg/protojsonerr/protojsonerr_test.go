package protojsonerr

import (
	"errors"
	"strings"
	"testing"

	hcv1 "github.com/opsuite/opsuite/gen/opsuite/healthchecker/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestDescribeNamesField(t *testing.T) {
	for _, tc := range []struct {
		body, wantPath string
	}{
		{`{"name":"a","interval":5}`, `"interval"`},
		{`{"name":"a","interval":"soon"}`, `"interval"`},
		{`{"name":"a","bogus":true}`, `"bogus"`},
		{`{"name":"a","http":{"url":"x","methd":"GET"}}`, `"http.methd"`},
		{`{"name":"a","http":{"methd":"GET"}}`, `"http.methd"`},
		{`{"http":{"url":"x","headers":{"a":1}}}`, `"http.headers.a"`},
		{`{"exec":{"argv":["a",2]}}`, `"exec.argv[1]"`},
		{"{\n  \"name\": \"a\",\n  \"tcp\": {\"address\": 7}\n}", `"tcp.address"`},
	} {
		t.Run(tc.body, func(t *testing.T) {
			err := protojson.Unmarshal([]byte(tc.body), &hcv1.Target{})
			if err == nil {
				t.Fatal("protojson accepted the body")
			}
			got := Describe([]byte(tc.body), err)
			if !strings.Contains(got, "at field "+tc.wantPath) {
				t.Fatalf("describeJSONError = %q, want it to name field %s", got, tc.wantPath)
			}
		})
	}
}

func TestDescribeWithoutPosition(t *testing.T) {
	got := Describe([]byte(`x`), errors.New("proto: something odd"))
	if got != "invalid JSON body: something odd" {
		t.Fatalf("got %q", got)
	}
}

// FuzzDescribe feeds arbitrary bodies through the decoder's error
// path: it must never panic and always produce a message.
func FuzzDescribe(f *testing.F) {
	for _, s := range []string{`{"name":"a","interval":5}`, `{"exec":{"argv":["a",2]}}`, `[`, `{"a":{"b":[1,{"c":`, "{\n\"x\"\n:\n[]}", `"\u00`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := protojson.Unmarshal(body, &hcv1.Target{})
		if err == nil {
			return
		}
		if msg := Describe(body, err); msg == "" {
			t.Fatal("empty message")
		}
		for off := range min(len(body)+2, 64) {
			_ = PathAt(body, off)
		}
	})
}
