package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/podrole/podrole/webhook/mutate"
	admissionv1 "k8s.io/api/admission/v1"
)

// reviewValidate decides one request of the ValidatingWebhookConfiguration
// (/validate). The validating webhook sees every object as it will be stored,
// after all mutating webhooks, and it has no objectSelector, so relabelling a
// pod cannot take it out of these checks:
//   - pod CREATE: mutate.ValidateCreate (podrole's containers intact, or the
//     pod did not need them), with the namespace looked up as /mutate does;
//   - pod UPDATE: mutate.ValidateUpdate (podrole's containers and annotations
//     unchanged, no opt-out label added, changed app containers still safe);
//   - pods/ephemeralcontainers UPDATE: mutate.ValidateEphemeral;
//   - pods/exec and pods/attach CONNECT: mutate.CheckConnect on the
//     container named in the request's options.
//
// Anything else is allowed. Nothing is ever patched. Requests that cannot be
// decoded are refused: each of these rules exists to stop something.
func (s *Server) reviewValidate(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string) {
	log := reqLog{ctx: ctx, base: s.opts.Logger, req: req}
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Group != "" || req.Resource.Group != "" || req.Resource.Resource != "pods" {
		log.Debug("not a pod request; allowed", "kind", req.Kind.String())
		return allow, string(mutate.Skipped)
	}
	var res mutate.Result
	switch {
	case req.Operation == admissionv1.Connect && (req.SubResource == "exec" || req.SubResource == "attach"):
		container, err := connectContainer(req)
		if err != nil {
			log.Warn("cannot decode connect options; refusing", "subresource", req.SubResource, "error", err.Error())
			return refuse(http.StatusBadRequest, fmt.Sprintf("podrole: cannot read the container of this %s request (%v), so podrole cannot check it", req.SubResource, err)), OutcomeError
		}
		res = mutate.CheckConnect(req.SubResource, req.Name, container)
	case req.SubResource == "ephemeralcontainers":
		if req.Operation != admissionv1.Update {
			return allow, string(mutate.Skipped)
		}
		return s.reviewEphemeral(log.logger(), req, mutate.ValidateEphemeral)
	case req.SubResource != "" || req.Kind.Kind != "Pod":
		log.Debug("not a pod, exec, attach or ephemeral containers request; allowed", "kind", req.Kind.String(), "subresource", req.SubResource)
		return allow, string(mutate.Skipped)
	case req.Operation == admissionv1.Create:
		_, pod, resp := decodePods(log.logger(), req, "it")
		if resp != nil {
			return resp, OutcomeError
		}
		ns, err := s.namespace(ctx, pod.Namespace)
		if err != nil {
			// Fail closed, as /mutate does.
			log.Error("namespace lookup failed; refusing", "error", err.Error())
			return refuse(http.StatusInternalServerError, fmt.Sprintf("podrole: cannot look up namespace %q to check the pod (%v); retry, and if it persists check the webhook's logs and RBAC (namespaces get/list/watch)", pod.Namespace, err)), OutcomeError
		}
		res = mutate.ValidateCreate(pod, ns, s.opts.Config)
	case req.Operation == admissionv1.Update:
		old, pod, resp := decodePods(log.logger(), req, "the update")
		if resp != nil {
			return resp, OutcomeError
		}
		res = mutate.ValidateUpdate(old, pod, s.opts.Config)
	default:
		return allow, string(mutate.Skipped)
	}
	if res.Outcome == mutate.Denied {
		log.Info("request denied", "subresource", req.SubResource, "name", req.Name, "reason", res.Message)
		return refuse(http.StatusForbidden, res.Message), string(mutate.Denied)
	}
	log.Debug("request allowed", "subresource", req.SubResource, "name", req.Name, "reason", res.Message)
	return allow, string(mutate.Skipped)
}

// connectContainer reads the container a CONNECT of pods/exec or
// pods/attach names: the request's object is its PodExecOptions or
// PodAttachOptions (both have "container"), never the pod.
func connectContainer(req *admissionv1.AdmissionRequest) (string, error) {
	want := map[string]string{"exec": "PodExecOptions", "attach": "PodAttachOptions"}[req.SubResource]
	if req.Kind.Kind != want {
		return "", fmt.Errorf("object kind %q, want %s", req.Kind.String(), want)
	}
	var opts struct {
		Container string `json:"container"`
	}
	if err := json.Unmarshal(req.Object.Raw, &opts); err != nil {
		return "", err
	}
	return opts.Container, nil
}
