package balancer

import (
	"fmt"
	"math"
	"testing"
)

// TestRingSkipsIneligible checks that a ring placed on every backend (ring
// weights) and stepping over those of weight 0 answers exactly as a ring
// of the eligible backends alone, and that an eligibility change reuses it.
func TestRingSkipsIneligible(t *testing.T) {
	const n = 200
	all := make([]Backend, n)
	ringW := make([]int, n)
	for i := range all {
		all[i] = Backend{ID: fmt.Sprintf("s%03d", i), Weight: 100 + i%3*50}
		ringW[i] = all[i].Weight
	}
	base, err := NewWith(Hash, all, Options{RingWeights: ringW})
	if err != nil {
		t.Fatal(err)
	}
	// Down shares from a few to most, the latter taking the sparse path.
	for _, downEvery := range []int{7, 2, 1} {
		t.Run(fmt.Sprint("down every ", downEvery), func(t *testing.T) {
			skipping := make([]Backend, n)
			var alone []Backend
			var aloneRing []int
			for i, b := range all {
				skipping[i] = b
				if i%downEvery == 0 && !(downEvery == 1 && i%10 == 3) {
					skipping[i].Weight = 0
					continue
				}
				alone = append(alone, b)
				aloneRing = append(aloneRing, ringW[i])
			}
			p, err := NewWith(Hash, skipping, Options{RingWeights: ringW, Previous: base})
			if err != nil {
				t.Fatal(err)
			}
			if &p.s.(*ring).owner[0] != &base.s.(*ring).owner[0] {
				t.Error("an eligibility change placed the ring again")
			}
			q, err := NewWith(Hash, alone, Options{RingWeights: aloneRing})
			if err != nil {
				t.Fatal(err)
			}
			for k := range 2000 {
				key := fmt.Sprint("10.0.", k/250, ".", k%250)
				got, want := p.PickN(key, nil, 3, nil), q.PickN(key, nil, 3, nil)
				if len(got) != len(want) {
					t.Fatalf("key %s: %d picks, want %d", key, len(got), len(want))
				}
				for j := range got {
					if p.ids[got[j]] != q.ids[want[j]] {
						t.Fatalf("key %s: pick %d is %s, ring of the eligible says %s", key, j, p.ids[got[j]], q.ids[want[j]])
					}
				}
			}
		})
	}
}

// TestWRRWithoutTable checks the golden-ratio slots used when the exact
// schedule is too costly: shares match the weights over a few periods and
// every window of one period holds each backend close to its share.
func TestWRRWithoutTable(t *testing.T) {
	const n = 5000
	backends := make([]Backend, n)
	var total int64
	for i := range backends {
		backends[i] = Backend{ID: fmt.Sprint("s", i), Weight: 37 + i%11}
		total += int64(backends[i].Weight)
	}
	p, err := New(WRR, backends)
	if err != nil {
		t.Fatal(err)
	}
	if p.s.(*wrr).seq != nil {
		t.Fatal("built a schedule; want the table-free path at this size")
	}
	counts := make([]int64, n)
	for range 4 * total {
		counts[p.Pick("", nil)]++
	}
	for i, c := range counts {
		want := 4 * int64(backends[i].Weight)
		if math.Abs(float64(c-want)) > 0.1*float64(want) {
			t.Fatalf("backend %d (weight %d): %d picks over four periods, want %d ±10%%", i, backends[i].Weight, c, want)
		}
	}
	if got := testing.AllocsPerRun(100, func() { p.Pick("", nil) }); got != 0 {
		t.Fatalf("Pick allocates %v", got)
	}
}

// BenchmarkNewOneChanged measures rebuilding a 10,000-backend picker after
// one backend's eligibility changed (a health verdict), with the previous
// picker and static ring weights as the store passes them: the case every
// replica meets on every watch event.
func BenchmarkNewOneChanged(b *testing.B) {
	const n = 10000
	backends := make([]Backend, n)
	ringW := make([]int, n)
	loads := make([]Load, n)
	for i := range backends {
		backends[i] = Backend{ID: fmt.Sprintf("s%05d", i), Weight: 50 + i%200}
		ringW[i] = backends[i].Weight
		loads[i] = Load{Assigned: new(Counter)}
	}
	for _, st := range []Strategy{WRR, Hash, P2C} {
		b.Run(string(st), func(b *testing.B) {
			prev, err := NewWith(st, backends, Options{RingWeights: ringW, Loads: loads})
			if err != nil {
				b.Fatal(err)
			}
			next := make([]Backend, n)
			copy(next, backends)
			b.ReportAllocs()
			round := 0
			for b.Loop() {
				round++
				i := round * 7919 % n
				next[i].Weight = 0
				if prev, err = NewWith(st, next, Options{RingWeights: ringW, Loads: loads, Previous: prev}); err != nil {
					b.Fatal(err)
				}
				next[i].Weight = backends[i].Weight
			}
		})
	}
}
