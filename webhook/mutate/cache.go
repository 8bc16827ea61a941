package mutate

import (
	"sync"

	"github.com/podrole/podrole/webhook/policy"
	corev1 "k8s.io/api/core/v1"
)

// Caches keep what Mutate would otherwise rebuild for every pod: the JSON
// patch (building and marshalling two containers is most of a pod's
// admission cost) and the namespaces' parsed allow-lists. A patch depends
// only on the configuration and on the few pod facts in patchKey, so equal
// keys give byte-identical patches. Each map is bounded. A nil *Caches
// caches nothing; the server sets one in Config.Caches. Safe for concurrent
// use.
type Caches struct {
	mu      sync.Mutex
	max     int
	patches map[patchKey][]byte
	roles   map[roleKey]resolved
	lists   *policy.ListCache
}

// roleKey is a role as written and the base ARN completing it.
type roleKey struct{ value, base string }

// resolved is policy.ResolveRole's answer.
type resolved struct {
	arn    string
	denial *policy.Denial
}

// NewCaches returns caches of at most max entries each.
func NewCaches(max int) *Caches {
	return &Caches{max: max, patches: map[patchKey][]byte{}, roles: map[roleKey]resolved{}, lists: policy.NewListCache(max)}
}

// patchKey is everything a patch depends on: cfg (its Caches field cleared)
// and what inject or block read from the pod.
type patchKey struct {
	cfg                          Config
	block                        bool
	arn, externalID, sessionName string
	port, health                 int
	volume                       string
	requireIMDSv2                bool
	// Whether the pod has none: the patch then creates the list or map.
	noInit, noContainers, noVolumes, noAnnotations bool
}

func newPatchKey(cfg Config, pod *corev1.Pod) patchKey {
	cfg.Caches = nil
	return patchKey{cfg: cfg, noInit: len(pod.Spec.InitContainers) == 0, noContainers: len(pod.Spec.Containers) == 0,
		noVolumes: len(pod.Spec.Volumes) == 0, noAnnotations: len(pod.Annotations) == 0}
}

// patch returns the cached patch for k; callers must not modify it.
func (c *Caches) patch(k patchKey) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.patches[k]
	return b, ok
}

func (c *Caches) storePatch(k patchKey, b []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for old := range c.patches {
		if len(c.patches) < c.max {
			break
		}
		delete(c.patches, old)
	}
	c.patches[k] = b
}

// resolveRole is policy.ResolveRole, remembered: it runs two regexps.
func (c *Caches) resolveRole(value, base string) (string, *policy.Denial) {
	if c == nil {
		return policy.ResolveRole(value, base)
	}
	k := roleKey{value, base}
	c.mu.Lock()
	r, ok := c.roles[k]
	c.mu.Unlock()
	if ok {
		return r.arn, r.denial
	}
	r.arn, r.denial = policy.ResolveRole(value, base)
	c.mu.Lock()
	defer c.mu.Unlock()
	for old := range c.roles {
		if len(c.roles) < c.max {
			break
		}
		delete(c.roles, old)
	}
	c.roles[k] = r
	return r.arn, r.denial
}

// listCache is nil (no caching) when c is.
func (c *Caches) listCache() *policy.ListCache {
	if c == nil {
		return nil
	}
	return c.lists
}
