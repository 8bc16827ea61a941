package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/sidecar/creds"
	"github.com/podrole/podrole/sidecar/creds/assume"
	"github.com/podrole/podrole/sidecar/health"
	"github.com/podrole/podrole/sidecar/imds"
	"github.com/podrole/podrole/sidecar/internal/httplimit"
	"github.com/podrole/podrole/sidecar/nodemeta"
)

const (
	// nodeMetadataTimeout bounds the start-up read of the node's metadata
	// (--source=node only), and each background retry after it: a node that
	// does not answer costs start-up this once.
	nodeMetadataTimeout = 3 * time.Second
	shutdownTimeout     = 5 * time.Second
	// nodeIMDSReachableWarning is logged when the node IMDS check finds that
	// an app in this pod gets answers from the node's metadata service.
	nodeIMDSReachableWarning = "apps in this pod can reach the node's instance metadata service (IMDSv1/IMDSv2): " +
		"set the node's HttpTokens=required and HttpPutResponseHopLimit=1 (a hop limit alone still lets IMDSv1 GETs through)"
)

// serveOptions are what tests vary of serve besides its flags.
type serveOptions struct {
	// nodeRetry paces the background reads of the node's metadata after the
	// read at start failed.
	nodeRetry nodemeta.RetryOptions
	// bind binds an IMDS address without listening yet: bindTCP.
	bind func(network, addr string) (pendingListener, error)
	// probeClient sends the node IMDS check: nodemeta.ProbeClient(), with no
	// socket mark.
	probeClient nodemeta.Doer
}

func defaultServeOptions() serveOptions {
	return serveOptions{
		nodeRetry:   nodemeta.RetryOptions{Backoff: nodemeta.DefaultBackoff(), AttemptTimeout: nodeMetadataTimeout},
		bind:        bindTCP,
		probeClient: nodemeta.ProbeClient(),
	}
}

// runServe is `podrole-sidecar serve`: it serves the metadata credentials
// API for one role until ctx ends.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runServeWith(ctx, args, stderr, defaultServeOptions())
}

func runServeWith(ctx context.Context, args []string, stderr io.Writer, opts serveOptions) error {
	cfg := contract.DefaultServeConfig()
	if help, err := parseFlags("serve", args, stderr, cfg.RegisterFlags, func() error { return cfg.Validate() }); help || err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	return serve(ctx, cfg, log, opts)
}

// pendingListener is an address bound but not listening until Listen (see
// bindTCP).
type pendingListener interface {
	Addr() net.Addr
	Listen() (net.Listener, error)
	Close() error
}

// agentStatus is what the probes report: started and ready need the IMDS
// port open too, which happens only after the node IMDS check made its
// connections, possibly after the first credentials arrived.
type agentStatus struct {
	cache *creds.Cache
	open  *atomic.Bool
}

func (s agentStatus) Started() bool { return s.open.Load() && s.cache.Started() }
func (s agentStatus) Ready() bool   { return s.open.Load() && s.cache.Ready() }

func serve(ctx context.Context, cfg contract.ServeConfig, log *slog.Logger, opts serveOptions) error {
	// First the mark: an agent that cannot set it must fail here, with the
	// reason, not later with a confusing answer from its own redirect.
	control, err := markedDialControl(cfg.AgentMark)
	if err != nil {
		return err
	}
	if cfg.Source == contract.SourceWebIdentity && cfg.Region == "" {
		return fmt.Errorf("--region is required with --source=%s: the agent then asks the node's metadata service nothing "+
			"(the pod's rules send 169.254.169.254 back to the agent itself), so the region for STS must come from --region (e.g. --region=us-east-1)", contract.SourceWebIdentity)
	}
	if _, err := assume.ParseRoleARN(cfg.RoleARN); err != nil {
		return fmt.Errorf("--role-arn: %w", err)
	}
	session, err := assume.SessionName(cfg.SessionName, cfg.PodNamespace, cfg.PodName)
	if err != nil {
		return err
	}
	log = log.With("role", cfg.RoleARN)
	log.Info("starting", "listen", cfg.Listen, "health_listen", cfg.HealthListen, "source", cfg.Source,
		"sts_endpoint", cfg.STSEndpoint, "region", cfg.Region, "availability_zone", cfg.AvailabilityZone,
		"node_metadata_endpoint", cfg.NodeMetadataEndpoint, "token_file", cfg.TokenFile,
		"external_id_set", cfg.ExternalID != "", "session_name", session,
		"session_duration", cfg.SessionDuration.String(), "require_imdsv2", cfg.RequireIMDSv2,
		"agent_mark", contract.FormatMark(cfg.AgentMark), "check_node_imds", !cfg.SkipNodeIMDSCheck,
		"session_tags", cfg.SessionTags, "session_tags_transitive", cfg.TransitiveSessionTags)

	// Bind first: a bad or taken address fails before any STS call. The
	// IMDS port listens only once the node IMDS check has its connections
	// (see bindTCP); the health port listens at once.
	imdsSockets, err := bindIMDS(cfg.Listen, opts.bind, log)
	if err != nil {
		return err
	}
	defer closeAll(imdsSockets)
	var healthListener net.Listener
	if cfg.HealthListen != "" {
		if healthListener, err = new(net.ListenConfig).Listen(ctx, "tcp", cfg.HealthListen); err != nil {
			return fmt.Errorf("listen on --health-listen=%s: %w", cfg.HealthListen, err)
		}
		defer healthListener.Close()
	}

	ctx, cancel := context.WithCancel(ctx)
	var background sync.WaitGroup
	defer func() {
		cancel()
		background.Wait()
	}()

	reg := prometheus.NewRegistry()
	// The expiry gauge reads the cache, which needs the metrics: cache is set
	// below, before the health port serves its first scrape.
	var cache *creds.Cache
	metrics, err := health.NewMetrics(reg, func() (time.Time, bool) { return cache.Expiration() }, time.Now)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}

	// What an app in this pod gets from the node's IMDS, checked while the
	// IMDS port is still closed, concurrently with the rest of the start.
	checkConnected := make(chan struct{})
	if cfg.SkipNodeIMDSCheck {
		close(checkConnected)
	} else {
		background.Go(func() {
			checkNodeIMDS(ctx, opts.probeClient, cfg.NodeMetadataEndpoint, checkConnected, metrics, log)
		})
	}

	// Every outbound call, node IMDS and STS, goes through this one client.
	client := assume.NewHTTPClient(control, cfg.NodeMetadataEndpoint)
	var md nodemeta.Metadata
	nodeComplete := true
	if cfg.Source == contract.SourceWebIdentity {
		// Nothing from the node: no identity document (404), region and
		// zone from the flags only.
		md = nodemeta.Metadata{Region: cfg.Region, AvailabilityZone: cfg.AvailabilityZone}
		log.Info("placement from the flags only (web identity asks the node's metadata service nothing)",
			"region", md.Region, "availability_zone", md.AvailabilityZone)
	} else {
		md, nodeComplete = nodePlacement(ctx, cfg, client, log)
	}
	region := cfg.Region
	if region == "" {
		region = md.Region
	}
	if region == "" {
		return errors.New("no region for STS: the node's metadata service did not give one; pass --region (e.g. --region=us-east-1)")
	}
	// The IMDS handler reads the placement on every request: the node's
	// answer replaces the flags' when it comes late.
	var placement atomic.Pointer[imds.Placement]
	placement.Store(imdsPlacement(md))
	if !nodeComplete {
		background.Go(func() { keepReadingNodePlacement(ctx, cfg, client, opts.nodeRetry, &placement, log) })
	}

	src, err := newSource(ctx, cfg, session, region, client)
	if err != nil {
		return err
	}
	cache = creds.New(src, creds.Options{Logger: log, Metrics: metrics})
	tokens, err := imds.NewTokens(nil)
	if err != nil {
		return err
	}
	handler, err := imds.New(imds.Config{
		RoleARN: cfg.RoleARN, Credentials: cache, Tokens: tokens, RequireIMDSv2: cfg.RequireIMDSv2,
		CurrentPlacement: func() imds.Placement { return *placement.Load() },
		Metrics:          metrics, Logger: log,
	})
	if err != nil {
		return err
	}

	errc := make(chan error, len(imdsSockets)+1)
	var servers []*http.Server
	start := func(l net.Listener, h http.Handler, lim httplimit.Limits, what string) {
		srv, l := lim.Server(l, h, slog.NewLogLogger(log.Handler(), slog.LevelDebug))
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s on %s: %w", what, l.Addr(), err)
			}
		}()
	}
	var imdsOpen atomic.Bool
	healthAddr := ""
	if healthListener != nil {
		// Reachable from the node (the kubelet's probes), Prometheus and
		// other pods: it serves nothing secret (see package health) and is
		// bounded by httplimit.Health.
		start(healthListener, health.Handler(agentStatus{cache: cache, open: &imdsOpen}, reg), httplimit.Health(), "health")
		healthAddr = healthListener.Addr().String()
	}
	// The first credentials are fetched while the check runs.
	go cache.Run(ctx)

	var runErr error
	select {
	case <-checkConnected:
		imdsListeners, err := listenAll(imdsSockets)
		if err != nil {
			runErr = err
			break
		}
		addrs := make([]string, 0, len(imdsListeners))
		for _, l := range imdsListeners {
			start(l, handler, httplimit.IMDS(), "metadata")
			addrs = append(addrs, l.Addr().String())
		}
		imdsOpen.Store(true)
		cur := placement.Load()
		log.Info("listening", "imds_addrs", addrs, "health_addr", healthAddr, "sts_region", region,
			"served_region", cur.Region, "served_availability_zone", cur.AvailabilityZone)
		go func() {
			if cache.WaitStarted(ctx) == nil {
				log.Info("started: first role credentials cached")
			}
		}()
		select {
		case <-ctx.Done():
			log.Info("shutting down")
		case runErr = <-errc:
			log.Error("server failed, shutting down", "err", runErr)
		}
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("server failed, shutting down", "err", runErr)
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	for _, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("graceful shutdown incomplete", "err", err)
		}
	}
	return runErr
}

func imdsPlacement(md nodemeta.Metadata) *imds.Placement {
	return &imds.Placement{Region: md.Region, AvailabilityZone: md.AvailabilityZone, IdentityDocument: md.IdentityDocument}
}

// checkNodeIMDS finds out whether an app in this pod gets answers from the
// node's metadata service, sending what an app would: no socket mark, so
// in a redirect-mode pod podrole-init's rules send it to the agent's own
// IMDS port, still closed then (the answer is "refused": not reachable).
// In env mode it goes where an app's would. connected is closed once both
// requests have their connection. It asks for nothing of value (a token it
// throws away, the top-level listing), with --source=web-identity too: it
// exists to warn.
func checkNodeIMDS(ctx context.Context, client nodemeta.Doer, endpoint string, connected chan<- struct{}, metrics *health.Metrics, log *slog.Logger) {
	r := nodemeta.CheckReachable(ctx, client, endpoint, connected)
	if ctx.Err() != nil {
		return // shutting down: the answers say nothing about the node
	}
	metrics.NodeIMDSReachable("v1", r.V1)
	metrics.NodeIMDSReachable("v2", r.V2)
	attrs := []any{"endpoint", endpoint, "imdsv1", r.V1, "imdsv1_result", r.V1Detail, "imdsv2", r.V2, "imdsv2_result", r.V2Detail}
	if r.V1 || r.V2 {
		log.Warn(nodeIMDSReachableWarning, attrs...)
		return
	}
	log.Info("apps in this pod cannot reach the node's instance metadata service", attrs...)
}

// bindIMDS binds --listen and, when that is 127.0.0.1, also [::1] on the
// same port: the init step DNATs [fd00:ec2::254]:80 there in IPv6 pods. A
// pod without IPv6 (no ::1, or no IPv6 at all) is normal and only logged.
// bind is bindTCP; tests pass a stand-in to play a pod without IPv6.
func bindIMDS(addr string, bind func(network, addr string) (pendingListener, error), log *slog.Logger) ([]pendingListener, error) {
	l, err := bind("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --listen=%s: %w", addr, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	if host != "127.0.0.1" {
		return []pendingListener{l}, nil
	}
	port := l.Addr().(*net.TCPAddr).Port // the real port, also when addr asked for 0
	l6, err := bind("tcp6", net.JoinHostPort("::1", strconv.Itoa(port)))
	switch {
	case err == nil:
		return []pendingListener{l, l6}, nil
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EAFNOSUPPORT):
		log.Debug("no IPv6 loopback in this pod; serving IPv4 only", "err", err)
		return []pendingListener{l}, nil
	default:
		// Someone else holding [::1]:port would receive the pod's IPv6
		// metadata traffic: refuse to start rather than let that happen.
		l.Close()
		return nil, fmt.Errorf("listen on [::1]:%d (IPv6 metadata redirect target): %w", port, err)
	}
}

// listenAll starts listening on every bound address, or on none.
func listenAll(ps []pendingListener) ([]net.Listener, error) {
	var ls []net.Listener
	for _, p := range ps {
		l, err := p.Listen()
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", p.Addr(), err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func closeAll(ps []pendingListener) {
	for _, p := range ps {
		p.Close()
	}
}

// nodePlacement reads region, zone and identity document from the node's
// IMDS once, falling back to --region / --availability-zone for what it
// did not give. complete is false when the read failed (in part): the
// caller then keeps reading in the background (keepReadingNodePlacement).
// client is the agent's marked client, which never uses a proxy for the
// node's IMDS (it refuses proxied token requests, and must be reached
// directly).
func nodePlacement(ctx context.Context, cfg contract.ServeConfig, client nodemeta.Doer, log *slog.Logger) (md nodemeta.Metadata, complete bool) {
	ctx, cancel := context.WithTimeout(ctx, nodeMetadataTimeout)
	defer cancel()
	node, err := nodemeta.Fetch(ctx, client, cfg.NodeMetadataEndpoint)
	if err != nil {
		log.Warn("reading the node's metadata failed; serving --region/--availability-zone until it answers (retrying in the background)",
			"endpoint", cfg.NodeMetadataEndpoint, "err", err)
	}
	md = nodemeta.Resolve(node, cfg.Region, cfg.AvailabilityZone)
	log.Info("node metadata", "node_region", node.Region, "node_availability_zone", node.AvailabilityZone,
		"node_identity_document", node.IdentityDocument != nil, "region", md.Region, "availability_zone", md.AvailabilityZone)
	return md, err == nil
}

// keepReadingNodePlacement retries the node's metadata with backoff until
// it answers (or ctx ends), then serves it: a node IMDS that blipped at
// start (a real one throttles at 1024 packets/s per interface) must not
// leave the pod without its region, zone and identity document for life.
// The region for STS stays what it was at start. It logs once, on success.
func keepReadingNodePlacement(ctx context.Context, cfg contract.ServeConfig, client nodemeta.Doer, o nodemeta.RetryOptions,
	placement *atomic.Pointer[imds.Placement], log *slog.Logger) {
	o.OnFailure = func(attempt int, wait time.Duration, err error) {
		log.Debug("reading the node's metadata failed again", "attempt", attempt+1, "retry_in", wait.String(), "err", err)
	}
	node, failures, err := nodemeta.FetchUntil(ctx, client, cfg.NodeMetadataEndpoint, o)
	if err != nil {
		return // ctx ended
	}
	md := nodemeta.Resolve(node, cfg.Region, cfg.AvailabilityZone)
	placement.Store(imdsPlacement(md))
	log.Info("node metadata read after failures; serving it from now on", "failed_attempts", failures+1,
		"node_region", node.Region, "node_availability_zone", node.AvailabilityZone,
		"node_identity_document", node.IdentityDocument != nil, "region", md.Region, "availability_zone", md.AvailabilityZone)
}

func newSource(ctx context.Context, cfg contract.ServeConfig, session, region string, client assume.HTTPClient) (creds.Source, error) {
	ac := assume.Config{
		RoleARN: cfg.RoleARN, SessionName: session, ExternalID: cfg.ExternalID,
		Duration: cfg.SessionDuration, Region: region, STSEndpoint: cfg.STSEndpoint,
		Tags: cfg.SessionTagList(), TransitiveTags: cfg.TransitiveSessionTags,
		HTTPClient: client,
	}
	switch cfg.Source {
	case contract.SourceWebIdentity:
		return assume.NewWebIdentity(ac, cfg.TokenFile)
	default:
		return assume.NewNode(ctx, ac, cfg.NodeMetadataEndpoint)
	}
}
