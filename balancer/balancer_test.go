package balancer_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tcpdispatch/tcpdispatch/balancer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var strategies = []balancer.Strategy{balancer.WRR, balancer.Random, balancer.Hash, balancer.P2C, balancer.LeastLoad}

func TestParseStrategy(t *testing.T) {
	tests := []struct {
		in      string
		want    balancer.Strategy
		wantErr bool
	}{
		{"wrr", balancer.WRR, false},
		{"", balancer.WRR, false},
		{"  ", balancer.WRR, false},
		{" Random\n", balancer.Random, false},
		{"HASH", balancer.Hash, false},
		{"rr", "", true},
		{"round-robin", "", true},
		{"hash ring", "", true},
	}
	for _, tt := range tests {
		got, err := balancer.ParseStrategy(tt.in)
		if tt.wantErr {
			if !errors.Is(err, balancer.ErrUnknownStrategy) || !strings.Contains(err.Error(), "wrr, random, hash") {
				t.Errorf("ParseStrategy(%q) error = %v, want ErrUnknownStrategy listing the valid names", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseStrategy(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseStrategy(f *testing.F) {
	for _, s := range []string{"", "wrr", " Hash ", "random", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := balancer.ParseStrategy(s)
		if err != nil {
			if !errors.Is(err, balancer.ErrUnknownStrategy) {
				t.Fatalf("ParseStrategy(%q) error %v does not wrap ErrUnknownStrategy", s, err)
			}
			return
		}
		if !slices.Contains(strategies, got) {
			t.Fatalf("ParseStrategy(%q) = %q, not a known strategy", s, got)
		}
		if _, err := balancer.New(got, nil); err != nil {
			t.Fatalf("New rejects parsed strategy %q: %v", got, err)
		}
	})
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name     string
		strategy balancer.Strategy
		backends []balancer.Backend
		want     error
	}{
		{"unknown strategy", "lru", nil, balancer.ErrUnknownStrategy},
		{"empty strategy", "", nil, balancer.ErrUnknownStrategy},
		{"duplicate ID", balancer.WRR, []balancer.Backend{{"a", 1}, {"b", 1}, {"a", 2}}, balancer.ErrDuplicateID},
		{"duplicate zero-weight ID", balancer.Hash, []balancer.Backend{{"a", 0}, {"a", 0}}, balancer.ErrDuplicateID},
		{"weight too large", balancer.Random, []balancer.Backend{{"a", math.MaxInt32 + 1}}, balancer.ErrWeightTooLarge},
	}
	for _, tt := range tests {
		if _, err := balancer.New(tt.strategy, tt.backends); !errors.Is(err, tt.want) {
			t.Errorf("%s: New error = %v, want %v", tt.name, err, tt.want)
		}
	}
	p, err := balancer.New(balancer.Hash, []balancer.Backend{{"a", 1}, {"b", 0}, {"c", -3}})
	if err != nil || p.Len() != 3 || p.Strategy() != balancer.Hash {
		t.Fatalf("New = %v (Len %d, Strategy %q), want Len 3, Strategy hash", err, p.Len(), p.Strategy())
	}
}

func mustNew(t testing.TB, s balancer.Strategy, backends []balancer.Backend) *balancer.Picker {
	t.Helper()
	p, err := balancer.New(s, backends)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// equal returns n backends srv-00000... of the given weight.
func equal(n, weight int) []balancer.Backend {
	bs := make([]balancer.Backend, n)
	for i := range bs {
		bs[i] = balancer.Backend{ID: fmt.Sprintf("srv-%05d", i), Weight: weight}
	}
	return bs
}

func keyOf(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

// TestDistribution checks that each backend's share of 100k picks is within
// 5% (relative) of its weight share for WRR and Random. Hash gets 15%: with
// 160 ring points per 100 weight, the arc a backend owns varies by about
// 1/sqrt(points), i.e. ~8% for the lightest backend here; the ring is
// deterministic, so this test cannot flake.
func TestDistribution(t *testing.T) {
	backends := []balancer.Backend{{"a", 100}, {"zero", 0}, {"b", 200}, {"c", 300}, {"neg", -5}, {"d", 400}}
	const picks = 100000
	for _, s := range strategies {
		t.Run(string(s), func(t *testing.T) {
			p := mustNew(t, s, backends)
			tol := 0.05
			if s == balancer.Hash {
				tol = 0.15
			}
			for _, excl := range [][]string{nil, {"c"}} {
				count := make([]int, len(backends))
				for i := range picks {
					got := p.Pick(keyOf(i), excl)
					if got < 0 || got >= len(backends) {
						t.Fatalf("Pick = %d", got)
					}
					count[got]++
				}
				var total int
				for _, b := range backends {
					if b.Weight > 0 && !slices.Contains(excl, b.ID) {
						total += b.Weight
					}
				}
				for i, b := range backends {
					want := 0.0
					if b.Weight > 0 && !slices.Contains(excl, b.ID) {
						want = float64(b.Weight) / float64(total)
					}
					share := float64(count[i]) / picks
					if want == 0 && count[i] != 0 || math.Abs(share-want) > tol*want {
						t.Errorf("exclude %v: %s (weight %d) got share %.4f, want %.4f ±%.0f%%", excl, b.ID, b.Weight, share, want, tol*100)
					}
				}
			}
		})
	}
}

func TestNothingToPick(t *testing.T) {
	tests := []struct {
		name     string
		backends []balancer.Backend
		exclude  []string
	}{
		{"empty", nil, nil},
		{"empty with exclude", nil, []string{"a"}},
		{"all zero weight", []balancer.Backend{{"a", 0}, {"b", -1}}, nil},
		{"all excluded", []balancer.Backend{{"a", 1}, {"b", 2}, {"z", 0}}, []string{"b", "a"}},
		{"all excluded, large", equal(100, 10), idsOf(equal(100, 10))},
	}
	for _, s := range strategies {
		for _, tt := range tests {
			p := mustNew(t, s, tt.backends)
			for i := range 100 {
				if got := p.Pick(keyOf(i), tt.exclude); got != -1 {
					t.Fatalf("%s %s: Pick = %d, want -1", s, tt.name, got)
				}
			}
			if got := p.PickN("k", tt.exclude, 3, nil); len(got) != 0 {
				t.Fatalf("%s %s: PickN = %v, want none", s, tt.name, got)
			}
		}
	}
}

func idsOf(bs []balancer.Backend) []string {
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	return ids
}

func TestExcludeOne(t *testing.T) {
	// Sizes chosen so WRR both finds a replacement within its walk and has
	// to fall back to sampling (one heavy backend excluded among light ones).
	sets := map[string][]balancer.Backend{
		"equal":   equal(5, 1),
		"skewed":  append([]balancer.Backend{{"heavy", 1000}}, equal(3, 1)...),
		"unknown": {{"a", 1}, {"b", 1}},
	}
	excl := map[string]string{"equal": "srv-00002", "skewed": "heavy", "unknown": "a"}
	for _, s := range strategies {
		for name, bs := range sets {
			p := mustNew(t, s, bs)
			ex := []string{excl[name], "no-such-backend", excl[name]}
			seen := map[int]bool{}
			for i := range 10000 {
				got := p.Pick(keyOf(i), ex)
				if got < 0 || bs[got].ID == excl[name] {
					t.Fatalf("%s %s: Pick excluding %q = %d", s, name, excl[name], got)
				}
				seen[got] = true
			}
			if len(seen) != len(bs)-1 {
				t.Errorf("%s %s: picked %d distinct backends, want all %d others", s, name, len(seen), len(bs)-1)
			}
		}
	}
}

func TestHashDeterministic(t *testing.T) {
	bs := equal(50, 100)
	bs[7].Weight = 300
	shuffled := slices.Clone(bs)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	p1 := mustNew(t, balancer.Hash, bs)
	p2 := mustNew(t, balancer.Hash, shuffled)
	for i := range 10000 {
		k := keyOf(i)
		a, b := p1.Pick(k, nil), p2.Pick(k, nil)
		if bs[a].ID != shuffled[b].ID {
			t.Fatalf("key %q: %s in one picker, %s in another", k, bs[a].ID, shuffled[b].ID)
		}
		if again := p1.Pick(k, nil); again != a {
			t.Fatalf("key %q: %d then %d", k, a, again)
		}
	}
}

// TestHashStability asserts consistent hashing's exact guarantees on 20
// equal backends and 10k keys:
//   - remove one: every key not on the removed backend keeps its backend
//     (100%, above the 95% floor), and the removed backend's keys spread over
//     the others;
//   - add one: every key that moves, moves to the new backend, and the
//     fraction moved is within [0.5, 1.5] × 1/21 (~4.8%), so at least 92.8%
//     of keys keep their backend.
func TestHashStability(t *testing.T) {
	const keys = 10000
	base := equal(20, 100)
	owner := func(p *balancer.Picker, bs []balancer.Backend) []string {
		ids := make([]string, keys)
		for i := range ids {
			ids[i] = bs[p.Pick(keyOf(i), nil)].ID
		}
		return ids
	}
	before := owner(mustNew(t, balancer.Hash, base), base)

	removed := slices.Delete(slices.Clone(base), 5, 6)
	after := owner(mustNew(t, balancer.Hash, removed), removed)
	gone := base[5].ID
	var orphans int
	for i := range keys {
		if before[i] == gone {
			orphans++
			continue
		}
		if after[i] != before[i] {
			t.Fatalf("remove: key %d moved %s -> %s though %s is still present", i, before[i], after[i], before[i])
		}
	}
	if orphans == 0 {
		t.Fatal("remove: removed backend owned no keys")
	}

	added := append(slices.Clone(base), balancer.Backend{ID: "srv-new", Weight: 100})
	after = owner(mustNew(t, balancer.Hash, added), added)
	var moved int
	for i := range keys {
		if after[i] != before[i] {
			if after[i] != "srv-new" {
				t.Fatalf("add: key %d moved %s -> %s, not to the new backend", i, before[i], after[i])
			}
			moved++
		}
	}
	if frac, want := float64(moved)/keys, 1.0/21; frac < 0.5*want || frac > 1.5*want {
		t.Fatalf("add: %.2f%% of keys moved, want about %.2f%%", 100*frac, 100*want)
	}
}

func TestPickN(t *testing.T) {
	bs := []balancer.Backend{{"a", 1}, {"b", 5}, {"zero", 0}, {"c", 2}, {"d", 3}, {"e", 1}}
	for _, s := range strategies {
		p := mustNew(t, s, bs)
		for i := range 1000 {
			k := keyOf(i)
			for _, excl := range [][]string{nil, {"b"}, {"a", "d", "zero"}} {
				eligible := 5 - len(slices.DeleteFunc(slices.Clone(excl), func(id string) bool { return id == "zero" }))
				for _, n := range []int{1, 2, 3, 10} {
					prefix := []int{42}
					got := p.PickN(k, excl, n, prefix)
					if got[0] != 42 {
						t.Fatalf("%s: PickN overwrote dst", s)
					}
					got = got[1:]
					if len(got) != min(n, eligible) {
						t.Fatalf("%s: PickN(%q, %v, %d) = %v, want %d entries", s, k, excl, n, got, min(n, eligible))
					}
					seen := map[int]bool{}
					for _, g := range got {
						if seen[g] || bs[g].Weight <= 0 || slices.Contains(excl, bs[g].ID) {
							t.Fatalf("%s: PickN(%q, %v, %d) = %v: duplicate, zero-weight or excluded entry", s, k, excl, n, got)
						}
						seen[g] = true
					}
					if s == balancer.Hash && got[0] != p.Pick(k, excl) {
						t.Fatalf("hash: PickN(%q, %v)[0] = %d, Pick = %d", k, excl, got[0], p.Pick(k, excl))
					}
				}
			}
			if s == balancer.Hash {
				// Failing over along the list gives the same answers as
				// excluding each failed backend in turn.
				all := p.PickN(k, nil, 5, nil)
				for j := 1; j < len(all); j++ {
					if got := p.Pick(k, idsAt(bs, all[:j])); got != all[j] {
						t.Fatalf("hash: key %q list %v, but Pick excluding %v = %d", k, all, all[:j], got)
					}
				}
			}
		}
		if got := p.PickN("k", nil, 0, nil); got != nil {
			t.Fatalf("%s: PickN n=0 = %v", s, got)
		}
	}
}

func idsAt(bs []balancer.Backend, idx []int) []string {
	ids := make([]string, len(idx))
	for i, j := range idx {
		ids[i] = bs[j].ID
	}
	return ids
}

// TestRandomPickNSampling checks that Random's alternatives follow weighted
// sampling without replacement: with weights 1 and 3 the heavier backend
// comes first 3/4 of the time.
func TestRandomPickNSampling(t *testing.T) {
	p := mustNew(t, balancer.Random, []balancer.Backend{{"light", 1}, {"heavy", 3}})
	var heavyFirst int
	buf := make([]int, 0, 2)
	const runs = 40000
	for range runs {
		got := p.PickN("", nil, 2, buf[:0])
		if len(got) != 2 || got[0] == got[1] {
			t.Fatalf("PickN = %v", got)
		}
		if got[0] == 1 {
			heavyFirst++
		}
	}
	if frac := float64(heavyFirst) / runs; math.Abs(frac-0.75) > 0.02 {
		t.Fatalf("heavy first in %.3f of runs, want 0.75", frac)
	}
}

func TestConcurrentPicks(t *testing.T) {
	bs := equal(100, 10)
	for _, s := range strategies {
		p := mustNew(t, s, bs)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				dst := make([]int, 0, 3)
				excl := []string{bs[g].ID}
				for i := range 2000 {
					k := keyOf(i)
					if got := p.Pick(k, nil); got < 0 {
						t.Errorf("%s: Pick = %d", s, got)
						return
					}
					if got := p.Pick(k, excl); got == g || got < 0 {
						t.Errorf("%s: Pick excluding %d = %d", s, g, got)
						return
					}
					if got := p.PickN(k, excl, 3, dst[:0]); len(got) != 3 {
						t.Errorf("%s: PickN = %v", s, got)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

func TestZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 10,000-backend pickers")
	}
	bs := equal(10000, 100)
	excl := []string{bs[3].ID, bs[42].ID, "unknown", bs[9999].ID}
	for _, s := range strategies {
		p := mustNew(t, s, bs)
		dst := make([]int, 0, 4)
		many := idsOf(bs[:100])
		cases := map[string]func(){
			"Pick":              func() { p.Pick("10.1.2.3", nil) },
			"Pick exclude":      func() { p.Pick("10.1.2.3", excl) },
			"PickN":             func() { p.PickN("10.1.2.3", nil, 4, dst[:0]) },
			"PickN exclude":     func() { p.PickN("10.1.2.3", excl, 4, dst[:0]) },
			"Pick exclude many": func() { p.Pick("10.1.2.3", many) },
		}
		for name, f := range cases {
			if allocs := testing.AllocsPerRun(1000, f); allocs != 0 {
				t.Errorf("%s %s: %v allocs/op, want 0", s, name, allocs)
			}
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, s := range strategies {
		for _, n := range []int{10, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", s, n), func(b *testing.B) {
				p := mustNew(b, s, equal(n, 100))
				b.ReportAllocs()
				for b.Loop() {
					p.Pick("10.1.2.3", nil)
				}
			})
		}
	}
}

func BenchmarkPickExclude(b *testing.B) {
	bs := equal(10000, 100)
	excl := []string{bs[3].ID, bs[42].ID, bs[4000].ID}
	for _, s := range strategies {
		b.Run(fmt.Sprintf("%s/10000", s), func(b *testing.B) {
			p := mustNew(b, s, bs)
			b.ReportAllocs()
			for b.Loop() {
				p.Pick("10.1.2.3", excl)
			}
		})
	}
}

func BenchmarkPickN3(b *testing.B) {
	bs := equal(10000, 100)
	for _, s := range strategies {
		b.Run(fmt.Sprintf("%s/10000", s), func(b *testing.B) {
			p := mustNew(b, s, bs)
			dst := make([]int, 0, 3)
			b.ReportAllocs()
			for b.Loop() {
				dst = p.PickN("10.1.2.3", nil, 3, dst[:0])
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	bs := equal(10000, 100)
	for _, s := range strategies {
		b.Run(fmt.Sprintf("%s/10000", s), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := balancer.New(s, bs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
