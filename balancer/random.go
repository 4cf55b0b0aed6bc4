package balancer

import (
	"math/rand/v2"
	"slices"
)

// random is weighted random choice; it has no tables of its own.
type random struct{}

func (random) first(p *Picker, _ string) int {
	if p.eligible == 0 {
		return -1
	}
	return p.locate(rand.Int64N(p.total()))
}

func (random) choose(p *Picker, _ string, t *taken, dst []int, end int) []int {
	return p.fill(t, dst, end)
}

// prevChooser returns prev's chooser as a T when prev is a picker of the
// same strategy over the same IDs as p, for reusing its costly tables.
func prevChooser[T chooser](p, prev *Picker) (T, bool) {
	var zero T
	if prev == nil || prev.strategy != p.strategy || !sameSlice(prev.ids, p.ids) && !slices.Equal(prev.ids, p.ids) {
		return zero, false
	}
	c, ok := prev.s.(T)
	return c, ok
}

// sameSlice reports whether a and b are the same slice (same backing array
// and length), which NewWith arranges when the IDs did not change.
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
