package backoff

import (
	"context"
	"testing"
	"time"
)

func TestExponentialNominal(t *testing.T) {
	b := Exponential{Base: 5 * time.Millisecond, Cap: 40 * time.Millisecond, Jitter: None}
	want := []time.Duration{5, 10, 20, 40, 40, 40}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("wait %d = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 5*time.Millisecond {
		t.Fatalf("after Reset = %v, want 5ms", got)
	}
}

func TestExponentialNoOverflow(t *testing.T) {
	b := Exponential{Base: time.Second, Cap: time.Hour, Jitter: None}
	for range 200 {
		if d := b.Next(); d <= 0 || d > time.Hour {
			t.Fatalf("wait %v outside (0, 1h]", d)
		}
	}
}

func TestJitterBounds(t *testing.T) {
	tests := []struct {
		name   string
		b      Exponential
		lo, hi time.Duration // bounds of the first wait
	}{
		{"spread", Exponential{Base: 100 * time.Millisecond, Cap: time.Second}, 80 * time.Millisecond, 120 * time.Millisecond},
		{"full with floor", Exponential{Base: 500 * time.Millisecond, Cap: time.Second, Floor: 100 * time.Millisecond, Jitter: Full}, 100 * time.Millisecond, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 1000 {
				b := tt.b
				if d := b.Next(); d < tt.lo || d > tt.hi {
					t.Fatalf("wait %v outside [%v, %v]", d, tt.lo, tt.hi)
				}
			}
		})
	}
}

func TestSpreadOf(t *testing.T) {
	if got := SpreadOf(0); got != 0 {
		t.Fatalf("SpreadOf(0) = %v", got)
	}
	for range 1000 {
		if d := SpreadOf(time.Second); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("SpreadOf(1s) = %v", d)
		}
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep with a live ctx reported false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with a done ctx reported true")
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep did not return when ctx was done")
	}
}
