package main

import "testing"

// TestServeGCPercent: serve lowers the GC target only when the operator
// tuned neither GOGC nor GOMEMLIMIT (empty is unset, as for the runtime).
func TestServeGCPercent(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want int
		set  bool
	}{
		{"nothing set", nil, defaultServeGCPercent, true},
		{"GOGC set", map[string]string{"GOGC": "200"}, 0, false},
		{"GOGC off", map[string]string{"GOGC": "off"}, 0, false},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "32MiB"}, 0, false},
		{"GOGC empty", map[string]string{"GOGC": ""}, defaultServeGCPercent, true},
		{"GOMEMLIMIT off", map[string]string{"GOMEMLIMIT": "off"}, 0, false},
		{"unrelated", map[string]string{"GODEBUG": "madvdontneed=1"}, defaultServeGCPercent, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, set := serveGCPercent(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if got != tc.want || set != tc.set {
				t.Fatalf("serveGCPercent = %d, %v; want %d, %v", got, set, tc.want, tc.set)
			}
		})
	}
}
