// Command podrole-webhook is the admission webhook that gives pods in
// labelled namespaces podrole's init step and agent (/mutate) and refuses
// what would undo them (/validate). See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/podrole/podrole/certs"
	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/envflag"
	"github.com/podrole/podrole/webhook/mutate"
	"github.com/podrole/podrole/webhook/nsinfo"
	"github.com/podrole/podrole/webhook/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "podrole-webhook: %v\n", err)
		os.Exit(1)
	}
}

// options are the webhook's flags.
type options struct {
	listen         string
	probeListen    string
	certDir        string
	certReload     time.Duration
	kubeconfig     string
	selfSigned     bool
	selfSecret     string
	webhookConfig  string
	serviceName    string
	serviceNS      string
	logLevel       string
	nsResync       time.Duration
	shutdownPeriod time.Duration
	inject         mutate.Config
}

func parseFlags(args []string, lookup func(string) (string, bool), stderr io.Writer) (*options, error) {
	o := &options{inject: mutate.DefaultConfig()}
	fs := flag.NewFlagSet("podrole-webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: podrole-webhook [flags]\n\nEvery flag can also come from the environment as PODROLE_<NAME> (--base-role-arn: PODROLE_BASE_ROLE_ARN).")
		fs.PrintDefaults()
	}
	c := &o.inject
	fs.StringVar(&o.listen, "listen", ":9443", "host:port of the HTTPS admission server (/mutate, /validate, /healthz, /readyz, /metrics)")
	fs.StringVar(&o.probeListen, "probe-listen", ":8080", "host:port of plain-HTTP /healthz, /readyz and /metrics for kubelet probes and scraping; empty: off")
	fs.StringVar(&o.certDir, "cert-dir", "", "directory holding tls.crt and tls.key (reloaded when they change); required unless --self-signed")
	fs.DurationVar(&o.certReload, "cert-reload-interval", 2*time.Second, "how often --cert-dir is checked for a rotated certificate")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: in-cluster service account")
	fs.BoolVar(&o.selfSigned, "self-signed", false, "generate a CA and serving certificate, keep them in --self-signed-secret and write the CA to the caBundle of the webhook configurations named --webhook-config-name")
	fs.StringVar(&o.selfSecret, "self-signed-secret", "podrole-system/podrole-webhook-tls", "NAMESPACE/NAME of the Secret holding the self-signed CA and certificate")
	fs.StringVar(&o.webhookConfig, "webhook-config-name", "podrole-webhook", "name of the MutatingWebhookConfiguration and of the ValidatingWebhookConfiguration whose caBundle --self-signed maintains (both must exist)")
	fs.StringVar(&o.serviceName, "service-name", "podrole-webhook", "the webhook's Service name, for the self-signed certificate's DNS names")
	fs.StringVar(&o.serviceNS, "service-namespace", "podrole-system", "the webhook's Service namespace, for the self-signed certificate's DNS names")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&o.nsResync, "namespace-resync", 0, "namespace informer resync period (0: watch only)")
	fs.DurationVar(&o.shutdownPeriod, "shutdown-grace-period", 10*time.Second, "how long in-flight requests may finish after SIGTERM")

	fs.StringVar(&c.SidecarImage, "sidecar-image", c.SidecarImage, "the podrole-sidecar image injected as podrole-init and podrole-agent (required; pin a version or digest)")
	fs.Func("sidecar-image-pull-policy", "imagePullPolicy of the injected containers (Always, IfNotPresent, Never; default: the cluster's)", func(v string) error {
		c.ImagePullPolicy = corev1.PullPolicy(v)
		return nil
	})
	fs.StringVar(&c.BaseRoleARN, "base-role-arn", c.BaseRoleARN, "ARN prefix completing role names, e.g. arn:aws:iam::111122223333:role/ (trailing / optional)")
	fs.StringVar(&c.Source, "source", c.Source, "where agents get base credentials: node (node role, then AssumeRole) or web-identity (projected token)")
	fs.StringVar(&c.STSEndpoint, "sts-endpoint", c.STSEndpoint, "STS endpoint URL passed to agents (default: regional)")
	fs.StringVar(&c.Region, "region", c.Region, "AWS region passed to agents (default: the node's)")
	fs.StringVar(&c.NodeMetadataEndpoint, "node-metadata-endpoint", c.NodeMetadataEndpoint, "the node's IMDS URL passed to agents")
	fs.BoolVar(&c.RequireAllowedRoles, "require-allowed-roles", c.RequireAllowedRoles, "refuse roles in namespaces without iam.amazonaws.com/allowed-roles or iam.amazonaws.com/permitted")
	fs.StringVar(&c.DefaultRole, "default-role", c.DefaultRole, "role (name or ARN) for pods in labelled namespaces that ask for none; empty: such pods get the block step")
	fs.StringVar(&c.SidecarMode, "sidecar-mode", c.SidecarMode, "native (agent is an init container with restartPolicy Always; Kubernetes 1.29+) or legacy (agent is the first container)")
	fs.IntVar(&c.SidecarUID, "sidecar-uid", c.SidecarUID, "UID (and GID) of the agent when it needs no capability (--source=web-identity); it grants nothing (the redirect exempts the agent's socket mark, never a UID). With --source=node the agent runs as root with NET_RAW only")
	fs.BoolVar(&c.AllowNetAdmin, "allow-net-admin", c.AllowNetAdmin, "admit pods whose containers add NET_ADMIN (service mesh init containers); WEAKENS protection: such a container can delete podrole's rules and reach the node's metadata service")
	fs.BoolVar(&c.AllowNetRaw, "allow-net-raw", c.AllowNetRaw, "admit containers that add NET_RAW and let them keep it (others still lose it); WEAKENS protection: raw packet sockets bypass netfilter, so such a container can reach the node's metadata service (the node role) past podrole's rules")
	fs.BoolVar(&c.AllowHostAccess, "allow-host-access", c.AllowHostAccess, "admit hostPID, hostIPC and hostPath volumes on the node's kubelet, runtime, /proc, /sys and pod-log paths in labelled namespaces; WEAKENS protection: such a pod can read other pods' tokens and podrole agents' memory and credentials")
	fs.StringVar(&c.Mode, "mode", c.Mode, "how pods reach their agent: redirect (podrole-init's rules; needs root with NET_ADMIN, refused by the baseline and restricted Pod Security Standards), "+
		"env (only a restricted-compliant agent; apps get AWS_EC2_METADATA_SERVICE_ENDPOINT; nothing stops an app that calls 169.254.169.254 itself: nodes need IMDS HttpTokens=required and hop limit 1) "+
		"or auto (env where the namespace's pod-security.kubernetes.io/enforce label is baseline or restricted, redirect elsewhere); a namespace annotation podrole.io/mode: redirect|env overrides it")
	fs.BoolVar(&c.RequireIMDSv2, "require-imdsv2", c.RequireIMDSv2, "every agent refuses IMDSv1 requests (serve --require-imdsv2); without it a pod can ask for that alone with the annotation podrole.io/require-imdsv2: \"true\"")
	fs.BoolVar(&c.AllowEnvModeNodeSource, "allow-env-mode-node-source", c.AllowEnvModeNodeSource, "admit env mode with --source=node; WEAKENS protection: the agent then needs the node's IMDS reachable from pods (hop limit 2, no rule exempts it), which is exactly what lets every app of the pod reach the node role")
	fs.IntVar(&c.SidecarPort, "sidecar-port", c.SidecarPort, "agent's IMDS port on 127.0.0.1 (moved up when the pod declares it)")
	fs.IntVar(&c.HealthPort, "health-port", c.HealthPort, "agent's health port for probes (moved up when the pod declares it)")
	fs.BoolVar(&c.SessionTags, "session-tags", c.SessionTags, "agents send session tags with sts:AssumeRole, as EKS Pod Identity does (eks-cluster-arn, eks-cluster-name, kubernetes-namespace, "+
		"kubernetes-service-account, kubernetes-pod-name, kubernetes-pod-uid), for attribute-based access control; roles' trust policies must allow sts:TagSession. Needs --cluster-name; not with --source=web-identity")
	fs.BoolVar(&c.SessionTagsTransitive, "session-tags-transitive", c.SessionTagsTransitive, "with --session-tags: pass every tag as transitive (TransitiveTagKeys), so it stays on sessions chained from the pod's")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "with --session-tags: the eks-cluster-name tag (required)")
	fs.StringVar(&c.ClusterARN, "cluster-arn", c.ClusterARN, "with --session-tags: the eks-cluster-arn tag, an EKS cluster ARN (arn:aws:eks:REGION:ACCOUNT:cluster/NAME); empty: no such tag")

	if err := envflag.ParseLookup(fs, args, lookup); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: podrole-webhook takes flags only", fs.Args())
	}
	return o, o.validate()
}

func (o *options) validate() error {
	if err := o.inject.Validate(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return fmt.Errorf("--listen=%q is not host:port: %w", o.listen, err)
	}
	if o.probeListen != "" {
		if _, _, err := net.SplitHostPort(o.probeListen); err != nil {
			return fmt.Errorf("--probe-listen=%q is not host:port: %w", o.probeListen, err)
		}
	}
	switch {
	case o.selfSigned && o.certDir != "":
		return errors.New("--cert-dir and --self-signed both given: use --cert-dir with cert-manager (or any mounted kubernetes.io/tls Secret), or --self-signed, not both")
	case !o.selfSigned && o.certDir == "":
		return errors.New("no serving certificate: give --cert-dir (a directory with tls.crt and tls.key, e.g. a cert-manager Secret volume) or --self-signed")
	}
	if o.selfSigned {
		ns, name, ok := strings.Cut(o.selfSecret, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("--self-signed-secret=%q is not NAMESPACE/NAME: give e.g. podrole-system/podrole-webhook-tls", o.selfSecret)
		}
		if o.serviceName == "" || o.serviceNS == "" {
			return errors.New("--self-signed needs --service-name and --service-namespace for the certificate's DNS names")
		}
	}
	if o.certReload <= 0 {
		return fmt.Errorf("--cert-reload-interval=%s must be positive", o.certReload)
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return err
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level=%q is not valid: use debug, info, warn or error", s)
	}
	return l, nil
}

// run parses args, starts the servers and blocks until ctx is done.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) error {
	o, err := parseFlags(args, lookup, stderr)
	if err != nil {
		return err
	}
	level, _ := parseLevel(o.logLevel)
	log := newLogger(stderr, level)

	restCfg, err := kubeConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "podrole-webhook"
	// Two small clients on one connection pool, not the typed clientset
	// (k8s.io/client-go/kubernetes): the webhook reads namespaces' metadata
	// and, self-signed, one Secret and two webhook configurations, and
	// linking every API group's typed client cost it about 15 MiB of
	// resident executable pages (README "Performance").
	httpClient, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		return fmt.Errorf("build Kubernetes HTTP client: %w", err)
	}
	metaClient, err := metadata.NewForConfigAndClient(restCfg, httpClient)
	if err != nil {
		return fmt.Errorf("build Kubernetes metadata client: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	store := &certs.Store{}
	certReady := store.Ready
	if o.selfSigned {
		ns, name, _ := strings.Cut(o.selfSecret, "/")
		dynClient, err := dynamic.NewForConfigAndClient(restCfg, httpClient)
		if err != nil {
			return fmt.Errorf("build Kubernetes dynamic client: %w", err)
		}
		ss := &certs.SelfSigned{
			Client: dynClient, SecretNamespace: ns, SecretName: name,
			// One name for both configurations, as in manifests/base.
			WebhookConfigName: o.webhookConfig, ValidatingWebhookConfigName: o.webhookConfig,
			DNSNames: serviceNames(o.serviceName, o.serviceNS), Store: store, Logger: log.With("component", "self-signed"),
			// One API server's webhook informer sees a caBundle change in
			// milliseconds; a few seconds cover several behind a load balancer.
			BundleSettle: 2 * time.Second,
		}
		certReady = ss.Ready
		// The Secret is watched, so a change made by another replica or an
		// operator is picked up at once; the hourly sync only renews.
		go ss.Run(ctx, time.Hour)
	} else {
		src := &certs.FileSource{Dir: o.certDir, Store: store, Logger: log.With("component", "certs")}
		if _, err := src.Load(); err != nil {
			// Not fatal: the Secret volume may appear a moment later; readiness
			// stays false until it does.
			log.Warn("serving certificate not loaded yet", "error", err.Error())
		}
		go src.Run(ctx, o.certReload)
	}

	namespaces := nsinfo.New(metaClient, o.nsResync)
	namespaces.Start(ctx)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := server.New(server.Options{
		Config: o.inject, Namespaces: namespaces, Logger: log, Registry: reg,
		Ready: []server.Check{
			{Name: "certificate", Ready: certReady},
			{Name: "namespace cache", Ready: func() error {
				if !namespaces.Synced() {
					return errors.New("namespace informer has not synced")
				}
				return nil
			}},
		},
	})
	if err != nil {
		return err
	}

	// Both listeners get server.DefaultLimits: read, write and idle timeouts
	// and a header bound, so a client that stalls is cut off.
	admission := srv.HTTPServer(srv.Handler(), store.TLSConfig(), slog.NewLogLogger(log.Handler(), slog.LevelDebug))
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on --listen=%s: %w", o.listen, err)
	}
	servers := []*http.Server{admission}
	errc := make(chan error, 2)
	go func() { errc <- serveErr("admission", admission.ServeTLS(ln, "", "")) }()
	if o.probeListen != "" {
		probe := srv.HTTPServer(srv.HealthHandler(), nil, nil)
		pln, err := new(net.ListenConfig).Listen(ctx, "tcp", o.probeListen)
		if err != nil {
			return fmt.Errorf("listen on --probe-listen=%s: %w", o.probeListen, err)
		}
		servers = append(servers, probe)
		go func() { errc <- serveErr("probe", probe.Serve(pln)) }()
	}
	log.Info("podrole-webhook serving", "listen", ln.Addr().String(), "probe_listen", o.probeListen,
		"source", o.inject.Source, "sidecar_mode", o.inject.SidecarMode, "sidecar_image", o.inject.SidecarImage,
		"self_signed", o.selfSigned, "default_role", o.inject.DefaultRole, "require_allowed_roles", o.inject.RequireAllowedRoles,
		"allow_net_admin", o.inject.AllowNetAdmin, "allow_net_raw", o.inject.AllowNetRaw, "allow_host_access", o.inject.AllowHostAccess,
		"mode", o.inject.Mode, "require_imdsv2", o.inject.RequireIMDSv2, "allow_env_mode_node_source", o.inject.AllowEnvModeNodeSource)

	if o.inject.Mode != contract.ModeRedirect && o.inject.Source == contract.SourceNode && !o.inject.AllowEnvModeNodeSource {
		// --mode=env was refused at start; auto (and namespace annotations)
		// can still pick env mode, and such pods are refused one by one.
		log.Warn("--source=node: pods in namespaces in env mode (pod-security.kubernetes.io/enforce baseline or restricted with --mode=auto, or annotated podrole.io/mode: env) that ask for a role are refused; use --source=web-identity so that they get their role")
	}

	if o.inject.Source == contract.SourceWebIdentity && o.inject.Region == "" {
		// The agent then asks the node's metadata service nothing and fails
		// to start without a region: say where it will come from.
		log.Warn("--source=web-identity without --region: each agent takes its region from its pod's topology.kubernetes.io/region label, which the API server copies from the node at binding (PodTopologyLabelsAdmission, on by default since Kubernetes 1.35); agents on nodes without that label will not start: set --region")
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, scancel := context.WithTimeout(context.Background(), o.shutdownPeriod)
	defer scancel()
	for _, s := range servers {
		if serr := s.Shutdown(sctx); serr != nil && err == nil {
			err = fmt.Errorf("shut down: %w", serr)
		}
	}
	log.Info("podrole-webhook stopped")
	return err
}

func serveErr(what string, err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", what, err)
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config: %w (outside a cluster, pass --kubeconfig)", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load --kubeconfig=%s: %w", path, err)
	}
	return c, nil
}

// serviceNames are the DNS names the API server may use for the Service.
func serviceNames(name, ns string) []string {
	return []string{name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local", name + "." + ns, name}
}
