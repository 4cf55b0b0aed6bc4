package balancer

import "slices"

// takenInline is how many members a taken set holds without allocating.
const takenInline = 128

// taken is the set of backends a pick must skip: the caller's exclusions
// plus, within PickN, the backends already chosen. It is kept sorted so
// sample can skip excluded weight ranges in order. It lives on the caller's
// stack; only sets larger than takenInline spill to the heap.
type taken struct {
	weight int64 // total weight of the members
	n      int   // members held in inline while spill is nil
	inline [takenInline]int32
	spill  []int32
}

func (t *taken) list() []int32 {
	if t.spill != nil {
		return t.spill
	}
	return t.inline[:t.n]
}

func (t *taken) has(i int32) bool {
	_, ok := slices.BinarySearch(t.list(), i)
	return ok
}

// add inserts backend i of weight w unless it is already a member.
func (t *taken) add(i int32, w int64) {
	l := t.list()
	pos, ok := slices.BinarySearch(l, i)
	if ok {
		return
	}
	t.weight += w
	switch {
	case t.spill == nil && t.n < len(t.inline):
		copy(t.inline[pos+1:t.n+1], t.inline[pos:t.n])
		t.inline[pos] = i
		t.n++
		return
	case t.spill == nil:
		// A fresh slice filled by copy (not slices.Clone, whose result may
		// alias its argument) keeps escape analysis from moving t to the heap.
		t.spill = make([]int32, len(l), 2*len(l))
		copy(t.spill, l)
	}
	t.spill = slices.Insert(t.spill, pos, i)
}
