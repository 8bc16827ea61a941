package bench

import (
	"encoding/json"
	"io"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// TrivialIMDS answers the three requests of an IMDSv2 credential fetch with
// fixed bytes and no checks: the practical upper limit for any IMDS server
// written with net/http on this machine.
func TrivialIMDS() http.Handler {
	creds := []byte(`{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC",` +
		`"AccessKeyId":"ASIAREFERENCE","SecretAccessKey":"reference","Token":"reference",` +
		`"Expiration":"2099-01-01T00:00:00Z"}`)
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "AQAEAreferencetokenreferencetokenreferencetoken==")
	})
	mux.HandleFunc("GET /latest/meta-data/iam/security-credentials/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if r.URL.Path == "/latest/meta-data/iam/security-credentials/" {
			io.WriteString(w, "reference-role")
			return
		}
		w.Write(creds)
	})
	return mux
}

// TrivialWebhook decodes an AdmissionReview, pod included, and returns a fixed
// JSONPatch: the least any mutating webhook must do.
func TrivialWebhook() http.Handler {
	patch := []byte(`[{"op":"add","path":"/metadata/annotations/podrole.io~1status","value":"injected"}]`)
	pt := admissionv1.PatchTypeJSONPatch
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(io.LimitReader(r.Body, 3<<20)).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
			http.Error(w, "bad pod", http.StatusBadRequest)
			return
		}
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: patch, PatchType: &pt}
		review.Request = nil
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(&review)
	})
	return mux
}
