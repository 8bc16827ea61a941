package mutate

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestMountsDiffer(t *testing.T) {
	token := corev1.VolumeMount{Name: "podrole-token", MountPath: "/var/run/secrets/podrole", ReadOnly: true}
	sa := corev1.VolumeMount{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}
	tests := []struct {
		name      string
		got, want []corev1.VolumeMount
		wantWhy   string
	}{
		{"identical", []corev1.VolumeMount{token}, []corev1.VolumeMount{token}, ""},
		{"none injected, service-account mount added by the API server", []corev1.VolumeMount{sa}, nil, ""},
		{"ours plus service-account mount", []corev1.VolumeMount{sa, token}, []corev1.VolumeMount{token}, ""},
		{"ours missing", []corev1.VolumeMount{sa}, []corev1.VolumeMount{token}, "is not mounted"},
		{"ours changed", []corev1.VolumeMount{{Name: "podrole-token", MountPath: "/var/run/secrets/podrole"}}, []corev1.VolumeMount{token}, "is not mounted"},
		{"shadowed by a mount on the same path", []corev1.VolumeMount{token, {Name: "evil", MountPath: "/var/run/secrets/podrole/"}}, []corev1.VolumeMount{token}, "overlaps"},
		{"shadowed from above", []corev1.VolumeMount{token, {Name: "evil", MountPath: "/var/run/secrets"}}, []corev1.VolumeMount{token}, "overlaps"},
		{"shadowed from below", []corev1.VolumeMount{token, {Name: "evil", MountPath: "/var/run/secrets/podrole/token"}}, []corev1.VolumeMount{token}, "overlaps"},
		{"sibling path is fine", []corev1.VolumeMount{token, {Name: "x", MountPath: "/var/run/secrets/podrolex"}}, []corev1.VolumeMount{token}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := mountsDiffer(tt.got, tt.want)
			if tt.wantWhy == "" && why != "" || tt.wantWhy != "" && !strings.Contains(why, tt.wantWhy) {
				t.Fatalf("mountsDiffer = %q, want %q", why, tt.wantWhy)
			}
		})
	}
}
