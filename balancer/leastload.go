package balancer

import "math/rand/v2"

// leastLoad picks the backend with the lowest score of all; its
// alternatives are the next lowest.
type leastLoad struct{}

func (leastLoad) first(p *Picker, _ string) int { return p.least(nil) }

func (leastLoad) choose(p *Picker, _ string, t *taken, dst []int, end int) []int {
	for len(dst) < end {
		dst = p.take(t, dst, p.least(t))
	}
	return dst
}

// least returns the eligible backend not in t (t may be nil) with the
// lowest score, or -1. The scan starts at a random backend so that ties
// are broken differently by each pick and each replica.
func (p *Picker) least(t *taken) int {
	n := len(p.ids)
	if p.eligible == 0 || (t != nil && len(t.list()) >= p.eligible) {
		return -1
	}
	best, bestScore := -1, 0.0
	start := rand.IntN(n)
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		if p.invW[i] == 0 || (t != nil && t.has(int32(i))) {
			continue
		}
		if s := p.score(i); best < 0 || s < bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
