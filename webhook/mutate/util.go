package mutate

import (
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

func itoa(i int) string { return strconv.Itoa(i) }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// firstDenial runs check on every container of the pod (init, regular and
// ephemeral, in that order) and returns the first denial it gives, or "".
func firstDenial(pod *corev1.Pod, check func(kind, name string, sc *corev1.SecurityContext) string) string {
	return firstContainerDenial(pod, func(kind, name string, sc *corev1.SecurityContext, _ []corev1.VolumeMount) string {
		return check(kind, name, sc)
	})
}

// firstContainerDenial is firstDenial for checks that also need a
// container's volume mounts. Ephemeral containers are a type of their own,
// so the walk hands out the fields the checks read rather than a Container.
func firstContainerDenial(pod *corev1.Pod, check func(kind, name string, sc *corev1.SecurityContext, mounts []corev1.VolumeMount) string) string {
	for _, c := range pod.Spec.InitContainers {
		if d := check("init container", c.Name, c.SecurityContext, c.VolumeMounts); d != "" {
			return d
		}
	}
	for _, c := range pod.Spec.Containers {
		if d := check("container", c.Name, c.SecurityContext, c.VolumeMounts); d != "" {
			return d
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if d := check("ephemeral container", c.Name, c.SecurityContext, c.VolumeMounts); d != "" {
			return d
		}
	}
	return ""
}
