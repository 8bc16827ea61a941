package kubetest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStart brings up etcd and kube-apiserver and stores a pod through them:
// the helpers others rely on work end to end.
func TestStart(t *testing.T) {
	c := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.Namespace(ctx, t, "smoke", map[string]string{"a": "b"}, nil)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{NodeName: "nowhere", AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "c", Image: "registry.example/c:1"}}},
	}
	got, err := c.Client.CoreV1().Pods("smoke").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.ServiceAccountName != "default" || got.UID == "" {
		t.Fatalf("stored pod %+v", got.ObjectMeta)
	}
}
