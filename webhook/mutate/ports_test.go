package mutate

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// portsPod declares every container port from 1 to 65535 except free.
func portsPod(free ...int) *corev1.Pod {
	skip := map[int]bool{}
	for _, p := range free {
		skip[p] = true
	}
	c := corev1.Container{Name: "app", Image: "registry.example/app:1"}
	for p := 1; p <= maxPort; p++ {
		if !skip[p] {
			c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: int32(p)})
		}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
	pod.Name, pod.Namespace = "greedy", "team-a"
	pod.Annotations = map[string]string{"iam.amazonaws.com/role": "app"}
	return pod
}

// TestChoosePortsAllTaken: a pod declaring every port (a fixture file would
// be 1.5 MB) used to loop forever in the port search, holding an admission
// worker. It is refused at once with a message, and a pod leaving two ports
// free gets exactly those, found by wrapping around from 65535 to 1024.
func TestChoosePortsAllTaken(t *testing.T) {
	cfg := testConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ns := Namespace{Name: "team-a", Labels: map[string]string{"podrole.io/inject": "enabled"}}

	start := time.Now()
	res := Mutate(portsPod(), ns, cfg)
	if res.Outcome != Denied || !strings.Contains(res.Message, `pod "greedy" declares every container port podrole could give its agent's IMDS port (1024-65535)`) {
		t.Fatalf("all ports declared: %s %q", res.Outcome, res.Message)
	}
	// Only the health port is missing: still refused, naming it.
	res = Mutate(portsPod(2000), ns, cfg)
	if res.Outcome != Denied || !strings.Contains(res.Message, "agent's health port") {
		t.Fatalf("one port free: %s %q", res.Outcome, res.Message)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two refusals took %s", d)
	}

	port, health, err := choosePorts(portsPod(2000, 3000), cfg)
	if err != nil || port != 2000 || health != 3000 {
		t.Fatalf("choosePorts with 2000 and 3000 free = %d, %d, %v", port, health, err)
	}
	if v := ValidateCreate(portsPod(), ns, cfg); v.Outcome != Denied {
		t.Errorf("ValidateCreate on the all-ports pod: %s %q", v.Outcome, v.Message)
	}
}
