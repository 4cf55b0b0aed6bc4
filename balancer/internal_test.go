package balancer

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestNginxSequence(t *testing.T) {
	want := []int32{0, 0, 1, 0, 2, 0, 0} // a a b a c a a
	if got := buildSchedule([]int64{5, 1, 1}); !slices.Equal(got, want) {
		t.Fatalf("buildSchedule(5,1,1) = %v, want %v", got, want)
	}

	// The same sequence through Pick, starting from slot 0. Zero-weight
	// backends are interleaved to check they are skipped and indices kept.
	p, err := New(WRR, []Backend{{"a", 5}, {"zero", 0}, {"b", 1}, {"c", 1}})
	if err != nil {
		t.Fatal(err)
	}
	p.next.Store(0)
	var got []int
	for range 2 * len(want) {
		got = append(got, p.Pick("", nil))
	}
	if w := []int{0, 0, 2, 0, 3, 0, 0, 0, 0, 2, 0, 3, 0, 0}; !slices.Equal(got, w) {
		t.Fatalf("Pick sequence = %v, want %v", got, w)
	}

	// PickN from slot 0 lists the next distinct backends of the schedule.
	p.next.Store(0)
	if got := p.PickN("", nil, 5, nil); !slices.Equal(got, []int{0, 2, 3}) {
		t.Fatalf("PickN from slot 0 = %v, want [0 2 3]", got)
	}
	p.next.Store(0)
	if got := p.PickN("", []string{"a"}, 5, nil); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("PickN excluding a from slot 0 = %v, want [2 3]", got)
	}
}

// TestSchedules checks both generators on random weights: each backend
// appears exactly weight times per period, and spread evenly: after any
// prefix of m slots its count stays within 2 of m·w/L.
func TestSchedules(t *testing.T) {
	gens := map[string]func([]int64, int64) []int32{
		"nginx":    nginxSchedule,
		"deadline": deadlineSchedule,
	}
	r := rand.New(rand.NewPCG(1, 2))
	for name, gen := range gens {
		for trial := range 50 {
			ws := make([]int64, 1+r.IntN(20))
			var l int64
			for i := range ws {
				ws[i] = 1 + r.Int64N(50)
				l += ws[i]
			}
			seq := gen(ws, l)
			if int64(len(seq)) != l {
				t.Fatalf("%s trial %d: len %d, want %d", name, trial, len(seq), l)
			}
			count := make([]int64, len(ws))
			for m, c := range seq {
				count[c]++
				for i, w := range ws {
					// |count - (m+1)·w/l| < 2, scaled by l to stay in integers.
					if d := count[i]*l - int64(m+1)*w; d >= 2*l || d <= -2*l {
						t.Fatalf("%s weights %v: backend %d has %d turns after %d slots, want about %.1f",
							name, ws, i, count[i], m+1, float64(int64(m+1)*w)/float64(l))
					}
				}
			}
			if !slices.Equal(count, ws) {
				t.Fatalf("%s: counts %v, want weights %v", name, count, ws)
			}
		}
	}
}

func TestScheduleLimits(t *testing.T) {
	tests := []struct {
		name    string
		weights []int64
		wantLen int
	}{
		{"gcd reduced", []int64{100, 200, 300}, 6},
		{"empty", nil, 0},
		{"all zero", []int64{0, -1}, 0},
		{"deadline path", slices.Repeat([]int64{100}, 10000), 10000},
		{"scaled to fit", []int64{1 << 30, 1<<30 + 1, 1}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := buildSchedule(tt.weights)
			if tt.wantLen >= 0 && len(seq) != tt.wantLen {
				t.Fatalf("len = %d, want %d", len(seq), tt.wantLen)
			}
			if len(seq) > maxSchedule {
				t.Fatalf("len = %d, above cap %d", len(seq), maxSchedule)
			}
			for i, w := range tt.weights {
				if n := countOf(seq, int32(i)); (w > 0) != (n > 0) {
					t.Fatalf("backend %d of weight %d appears %d times", i, w, n)
				}
			}
		})
	}
}

func countOf(seq []int32, i int32) (n int) {
	for _, c := range seq {
		if c == i {
			n++
		}
	}
	return n
}

func TestFit(t *testing.T) {
	v := []int64{1, 1000, 3000}
	if !fit(v, 100) || !slices.Equal(v, []int64{1, 24, 72}) {
		t.Fatalf("fit = %v, want [1 24 72]", v)
	}
	v = []int64{1, 2}
	if fit(v, 100) || !slices.Equal(v, []int64{1, 2}) {
		t.Fatalf("fit changed a set under the limit: %v", v)
	}
}

func TestRingSize(t *testing.T) {
	ids := make([]string, 10000)
	w := make([]int64, len(ids))
	for i := range ids {
		ids[i], w[i] = fmt.Sprint("srv-", i), 100
	}
	ring, owner := buildRing(ids, w)
	if len(ring) > maxRing || len(ring) != len(owner) || !slices.IsSorted(ring) {
		t.Fatalf("ring of %d points (cap %d), %d owners, sorted %v", len(ring), maxRing, len(owner), slices.IsSorted(ring))
	}
	ring, _ = buildRing([]string{"a", "b"}, []int64{100, 1})
	if len(ring) != 160+2 { // round(1.6) = 2
		t.Fatalf("ring of %d points, want 162", len(ring))
	}
}

// TestHash64 pins hash64: ring positions must not change between releases,
// or every key would move when replicas run different versions.
func TestHash64(t *testing.T) {
	for _, s := range []string{"", "a", "10.0.0.1", "srv-1#0"} {
		f := fnv.New64a()
		f.Write([]byte(s))
		h := f.Sum64()
		h ^= h >> 33
		h *= 0xff51afd7ed558ccd
		h ^= h >> 33
		h *= 0xc4ceb9fe1a85ec53
		h ^= h >> 33
		if got := hash64(s); got != h || hash64([]byte(s)) != h {
			t.Errorf("hash64(%q) = %#x, want FNV-1a+fmix64 %#x", s, got, h)
		}
	}
	if got, want := hash64("10.0.0.1"), uint64(0xc879e56ddc6c5c88); got != want {
		t.Errorf("hash64(10.0.0.1) = %#x, want %#x", got, want)
	}
}

func TestTakenSpill(t *testing.T) {
	var s taken
	for i := 2*takenInline - 1; i >= 0; i-- { // descending: every add inserts at the front
		s.add(int32(i), 1)
		s.add(int32(i), 1)
	}
	l := s.list()
	if len(l) != 2*takenInline || !slices.IsSorted(l) || s.weight != 2*takenInline {
		t.Fatalf("taken: %d members, sorted %v, weight %d", len(l), slices.IsSorted(l), s.weight)
	}
	if !s.has(0) || !s.has(2*takenInline-1) || s.has(2*takenInline) {
		t.Fatal("taken.has wrong after spill")
	}
}

// TestPreviousReused checks that a picker built from the same IDs and
// weights as Options.Previous shares its schedule or ring, and that any
// change builds a new one.
func TestPreviousReused(t *testing.T) {
	backends := []Backend{{"a", 100}, {"b", 200}, {"c", 300}}
	for _, st := range []Strategy{WRR, Hash} {
		first, err := NewWith(st, backends, Options{})
		if err != nil {
			t.Fatal(err)
		}
		same, err := NewWith(st, backends, Options{Previous: first})
		if err != nil {
			t.Fatal(err)
		}
		changed, err := NewWith(st, []Backend{{"a", 100}, {"b", 200}, {"c", 301}}, Options{Previous: first})
		if err != nil {
			t.Fatal(err)
		}
		data := func(p *Picker) *int32 {
			if st == WRR {
				return &p.s.(*wrr).seq[0]
			}
			return &p.s.(*ring).owner[0]
		}
		if data(same) != data(first) {
			t.Errorf("%s: same inputs did not reuse the previous picker's structure", st)
		}
		if data(changed) == data(first) {
			t.Errorf("%s: changed weights reused the previous picker's structure", st)
		}
		if same.Pick("k", nil) < 0 || changed.Pick("k", nil) < 0 {
			t.Errorf("%s: no pick", st)
		}
	}
}

// BenchmarkNewReused measures rebuilding a 10,000-backend picker whose
// schedule or ring can be reused from the previous one.
func BenchmarkNewReused(b *testing.B) {
	backends := make([]Backend, 10000)
	for i := range backends {
		backends[i] = Backend{ID: fmt.Sprintf("s%05d", i), Weight: 50 + i%200}
	}
	for _, st := range []Strategy{WRR, Hash} {
		b.Run(string(st), func(b *testing.B) {
			prev, err := NewWith(st, backends, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if prev, err = NewWith(st, backends, Options{Previous: prev}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
