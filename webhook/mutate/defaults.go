package mutate

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// defaultContainer applies to c, in place, the defaults the API server gives
// a container of a pod (k8s.io/kubernetes pkg/apis/core/v1 defaults.go and
// its generated SetObjectDefaults_Pod, v1.37), so that a stored pod and a
// freshly built injection compare equal field by field. Both sides go
// through it: a field left empty means what its default means, and a field
// set to the default is what the API server would have stored. The webhook
// cannot import the API server's code (k8s.io/kubernetes is not a library);
// TestAgainstAPIServer re-creates stored pods to keep this list honest.
func defaultContainer(c *corev1.Container) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = defaultPullPolicy(c.Image)
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil {
			if vf.FieldRef != nil && vf.FieldRef.APIVersion == "" {
				vf.FieldRef.APIVersion = "v1"
			}
			if vf.FileKeyRef != nil && vf.FileKeyRef.Optional == nil {
				vf.FileKeyRef.Optional = ptr(false)
			}
		}
	}
	// Quantities are rounded up to milli-units; equality.Semantic compares
	// them by value, so only the requests-from-limits default matters.
	for k, v := range c.Resources.Limits {
		if _, ok := c.Resources.Requests[k]; !ok {
			if c.Resources.Requests == nil {
				c.Resources.Requests = corev1.ResourceList{}
			}
			c.Resources.Requests[k] = v.DeepCopy()
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.TimeoutSeconds == 0 {
			p.TimeoutSeconds = 1
		}
		if p.PeriodSeconds == 0 {
			p.PeriodSeconds = 10
		}
		if p.SuccessThreshold == 0 {
			p.SuccessThreshold = 1
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = 3
		}
		defaultHTTPGet(p.HTTPGet)
		if p.GRPC != nil && p.GRPC.Service == nil {
			p.GRPC.Service = ptr("")
		}
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil {
				defaultHTTPGet(h.HTTPGet)
			}
		}
	}
}

// defaultVolume applies the API server's defaults to the volume types
// podrole injects (a projected service-account token).
func defaultVolume(v *corev1.Volume) {
	p := v.Projected
	if p == nil {
		return
	}
	if p.DefaultMode == nil {
		p.DefaultMode = ptr(corev1.ProjectedVolumeSourceDefaultMode)
	}
	for i := range p.Sources {
		if t := p.Sources[i].ServiceAccountToken; t != nil && t.ExpirationSeconds == nil {
			t.ExpirationSeconds = ptr(int64(3600))
		}
	}
}

// defaultHTTPGet: path "/", scheme HTTP, and protocol HTTP/1.1, which the API
// server sets only with the H2CContainerProbe feature (alpha in 1.37); unset
// and HTTP/1.1 mean the same to the kubelet.
func defaultHTTPGet(a *corev1.HTTPGetAction) {
	if a == nil {
		return
	}
	if a.Path == "" {
		a.Path = "/"
	}
	if a.Scheme == "" {
		a.Scheme = corev1.URISchemeHTTP
	}
	if a.Protocol == nil {
		a.Protocol = ptr(corev1.HTTPProtocolHTTP1)
	}
}

// defaultPullPolicy is the API server's rule: Always for the tag "latest"
// (or no tag and no digest, which means latest), else IfNotPresent.
func defaultPullPolicy(image string) corev1.PullPolicy {
	if imageTag(image) == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// imageTag returns the tag of an image reference as the API server's parser
// sees it: "" with a digest and no tag, "latest" with neither.
func imageTag(image string) string {
	name, _, digested := strings.Cut(image, "@")
	// A ':' after the last '/' starts the tag; one before it is a registry port.
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		return name[i+1:]
	}
	if digested {
		return ""
	}
	return "latest"
}
