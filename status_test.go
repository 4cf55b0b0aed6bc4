package tcpdispatch

import "testing"

func TestParseStatus(t *testing.T) {
	tests := []struct {
		in   string
		want Status
		ok   bool
	}{
		{`{"conns": 10, "max_conns": 100, "load": 0.25, "draining": false}`, Status{Conns: 10, MaxConns: 100, Load: 0.25}, true},
		{` {"conns":3,"extra":{"nested":[1,2]},"version":"1.2"} `, Status{Conns: 3}, true},
		{`{}`, Status{}, true},
		{`{"draining": true}`, Status{Draining: true}, true},
		{`{"load": 1}`, Status{Load: 1}, true},
		{`{"load": 1.01}`, Status{}, false},
		{`{"load": -0.1}`, Status{}, false},
		{`{"conns": -1}`, Status{}, false},
		{`{"max_conns": -5}`, Status{}, false},
		{`{"conns": "10"}`, Status{}, false},
		{`[1]`, Status{}, false},
		{`null`, Status{}, false},
		{``, Status{}, false},
		{`{"conns": 1`, Status{}, false},
		{`{"conns": 1e30}`, Status{}, false},
	}
	for _, tt := range tests {
		got, err := ParseStatus([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseStatus(%q) = %+v, %v; want %+v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{`{"conns":1,"max_conns":2,"load":0.5,"draining":true}`, `{}`, `{"load":2}`, `[]`, `{"x":{"y":[]}}`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatus(b)
		if err != nil {
			if st != (Status{}) {
				t.Fatalf("error %v with a non-zero status %+v", err, st)
			}
			return
		}
		if st.Conns < 0 || st.MaxConns < 0 || !(st.Load >= 0 && st.Load <= 1) {
			t.Fatalf("ParseStatus(%q) accepted %+v", b, st)
		}
		if u := st.Utilization(); u < 0 || u != u {
			t.Fatalf("utilization %v", u)
		}
	})
}
