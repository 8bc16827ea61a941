package mutate

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestMountsDiffer(t *testing.T) {
	token := corev1.VolumeMount{Name: "podrole-token", MountPath: "/var/run/secrets/podrole", ReadOnly: true}
	sa := corev1.VolumeMount{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}
	volumes := []corev1.Volume{
		{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}},
		{Name: "podrole-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}},
		{Name: "tools", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
	}
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
		{"shadowed by a mount on the same path", []corev1.VolumeMount{token, {Name: "tools", MountPath: "/var/run/secrets/podrole/"}}, []corev1.VolumeMount{token}, "is not a mount podrole injects"},
		{"any other mount, even where podrole mounts nothing", []corev1.VolumeMount{{Name: "tools", MountPath: "/usr/sbin"}}, nil, "is not a mount podrole injects"},
		{"service-account path from a ConfigMap", []corev1.VolumeMount{{Name: "tools", MountPath: sa.MountPath, ReadOnly: true}}, nil, "is not a mount podrole injects"},
		{"service-account path writable", []corev1.VolumeMount{{Name: sa.Name, MountPath: sa.MountPath}}, nil, "is not a mount podrole injects"},
		{"service-account path with a subPath", []corev1.VolumeMount{{Name: sa.Name, MountPath: sa.MountPath, ReadOnly: true, SubPath: "x"}}, nil, "is not a mount podrole injects"},
		{"service-account mount of a volume the pod lacks", []corev1.VolumeMount{{Name: "gone", MountPath: sa.MountPath, ReadOnly: true}}, nil, "is not a mount podrole injects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := mountsDiffer(tt.got, tt.want, volumes)
			if tt.wantWhy == "" && why != "" || tt.wantWhy != "" && !strings.Contains(why, tt.wantWhy) {
				t.Fatalf("mountsDiffer = %q, want %q", why, tt.wantWhy)
			}
		})
	}
}

// TestImageTag: the API server defaults imagePullPolicy from the tag.
func TestImageTag(t *testing.T) {
	for image, want := range map[string]string{
		"registry.example/podrole-sidecar:test":            "test",
		"registry.example:5000/podrole-sidecar":            "latest",
		"registry.example:5000/podrole-sidecar:v1":         "v1",
		"podrole-sidecar":                                  "latest",
		"podrole-sidecar@sha256:0123":                      "",
		"registry.example/podrole-sidecar:v1@sha256:0123":  "v1",
		"registry.example/podrole-sidecar:latest":          "latest",
		"registry.example:5000/podrole-sidecar@sha256:abc": "",
	} {
		if got := imageTag(image); got != want {
			t.Errorf("imageTag(%q) = %q, want %q", image, got, want)
		}
	}
}
