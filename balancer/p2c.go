package balancer

// p2c is the power of two choices: two backends drawn by weight, the one
// with the lower score wins. Its alternatives are weighted samples.
type p2c struct{}

func (p2c) first(p *Picker, _ string) int {
	if p.eligible == 0 {
		return -1
	}
	return p.p2c(nil)
}

func (p2c) choose(p *Picker, _ string, t *taken, dst []int, end int) []int {
	return p.fill(t, p.take(t, dst, p.p2c(t)), end)
}

// p2c draws two backends not in t by weight and returns the one with the
// lower score. A draw that repeats the first is retried twice, so small
// sets still compare two distinct backends most of the time.
func (p *Picker) p2c(t *taken) int {
	a := p.draw(t)
	if a < 0 {
		return -1
	}
	b := a
	for try := 0; try < 3 && b == a; try++ {
		b = p.draw(t)
	}
	if p.score(b) < p.score(a) {
		return b
	}
	return a
}
