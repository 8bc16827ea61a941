//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

// BenchmarkPodStartup measures, on the running cluster with podrole
// installed, the time from `kubectl apply` of a pod to its Ready condition,
// with and without injection. Each iteration starts one pod; the reported
// ms-median is the median over b.N pods (run with -benchtime=10x):
//
//	go test -tags e2e -run '^$' -bench PodStartup -benchtime 10x ./e2e/
func BenchmarkPodStartup(b *testing.B) {
	e := loadEnv(b)
	if _, _, err := e.run(context.Background(), "", "get", "namespace", webhookNS); err != nil {
		e.install(b)
		b.Cleanup(func() { e.uninstall(b) })
	}
	for _, c := range []struct {
		name     string
		labelled bool
		role     string
	}{{"plain", false, ""}, {"injected", true, "e2e-app"}} {
		b.Run(c.name, func(b *testing.B) {
			ns := e.namespace(b, "bench-"+c.name, c.labelled, nil)
			var ds []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("p%d", i)
				start := time.Now()
				e.apply(b, podSpec{name: name, ns: ns, role: c.role}.yaml(e))
				e.waitReady(b, ns, name)
				ds = append(ds, time.Since(start))
				b.StopTimer()
				_, _, _ = e.run(context.Background(), "", "-n", ns, "delete", "pod", name, "--wait=false")
				b.StartTimer()
			}
			b.StopTimer()
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			med := ds[len(ds)/2]
			if len(ds)%2 == 0 {
				med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
			}
			b.ReportMetric(float64(med.Milliseconds()), "ms-median")
			b.ReportMetric(float64(ds[len(ds)-1].Milliseconds()), "ms-max")
			b.Logf("%s: %d pods, median %s, min %s, max %s", c.name, len(ds), med, ds[0], ds[len(ds)-1])
		})
	}
}
