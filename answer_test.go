package tcpdispatch

import (
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"tcp1", true},
		{"a", true},
		{"A-Z_a.z:0@9", true},
		{strings.Repeat("x", MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", MaxIDLen+1), false},
		{"tcp/1", false},
		{"tcp 1", false},
		{"tcp,1", false},
		{"tcp%1", false},
		{"tcp\x00", false},
		{"tcpé", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := ValidateID(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateID(%q) = %v; want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}
