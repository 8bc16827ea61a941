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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podrole/podrole/contract"
	"github.com/podrole/podrole/sidecar/creds"
	"github.com/podrole/podrole/sidecar/creds/assume"
	"github.com/podrole/podrole/sidecar/health"
	"github.com/podrole/podrole/sidecar/imds"
	"github.com/podrole/podrole/sidecar/nodemeta"
)

const (
	// nodeMetadataTimeout bounds the start-up read of the node's metadata
	// (--source=node only); a node that does not answer costs this once.
	nodeMetadataTimeout = 3 * time.Second
	shutdownTimeout     = 5 * time.Second
)

// runServe is `podrole-sidecar serve`: it serves the metadata credentials
// API for one role until ctx ends.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := contract.DefaultServeConfig()
	if help, err := parseFlags("serve", args, stderr, cfg.RegisterFlags, func() error { return cfg.Validate() }); help || err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	return serve(ctx, cfg, log)
}

func serve(ctx context.Context, cfg contract.ServeConfig, log *slog.Logger) error {
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
		"agent_mark", contract.FormatMark(cfg.AgentMark))

	// Bind first: a bad or taken address fails before any STS call.
	imdsListeners, err := listenIMDS(cfg.Listen, net.Listen, log)
	if err != nil {
		return err
	}
	defer closeAll(imdsListeners)
	var healthListener net.Listener
	if cfg.HealthListen != "" {
		if healthListener, err = net.Listen("tcp", cfg.HealthListen); err != nil {
			return fmt.Errorf("listen on --health-listen=%s: %w", cfg.HealthListen, err)
		}
		defer healthListener.Close()
	}

	// Every outbound call, node IMDS and STS, goes through this one client.
	client := assume.NewHTTPClient(control, cfg.NodeMetadataEndpoint)
	var placement nodemeta.Metadata
	if cfg.Source == contract.SourceWebIdentity {
		// Nothing from the node: no identity document (404), region and
		// zone from the flags only.
		placement = nodemeta.Metadata{Region: cfg.Region, AvailabilityZone: cfg.AvailabilityZone}
		log.Info("placement from the flags only (web identity asks the node's metadata service nothing)",
			"region", placement.Region, "availability_zone", placement.AvailabilityZone)
	} else {
		placement = nodePlacement(ctx, cfg, client, log)
	}
	region := cfg.Region
	if region == "" {
		region = placement.Region
	}
	if region == "" {
		return errors.New("no region for STS: the node's metadata service did not give one; pass --region (e.g. --region=us-east-1)")
	}

	src, err := newSource(ctx, cfg, session, region, client)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	// The expiry gauge reads the cache, which needs the metrics: cache is set
	// just below, long before the first scrape can happen.
	var cache *creds.Cache
	metrics, err := health.NewMetrics(reg, func() (time.Time, bool) { return cache.Expiration() }, time.Now)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	cache = creds.New(src, creds.Options{Logger: log, Metrics: metrics})
	tokens, err := imds.NewTokens(nil)
	if err != nil {
		return err
	}
	handler, err := imds.New(imds.Config{
		RoleARN: cfg.RoleARN, Credentials: cache, Tokens: tokens, RequireIMDSv2: cfg.RequireIMDSv2,
		Placement: imds.Placement{
			Region: placement.Region, AvailabilityZone: placement.AvailabilityZone,
			IdentityDocument: placement.IdentityDocument,
		},
		Metrics: metrics, Logger: log,
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(imdsListeners)+1)
	var servers []*http.Server
	start := func(l net.Listener, h http.Handler, what string) {
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
		// "OPTIONS *" would otherwise be answered 200 by net/http itself.
		srv.DisableGeneralOptionsHandler = true
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s on %s: %w", what, l.Addr(), err)
			}
		}()
	}
	addrs := make([]string, 0, len(imdsListeners))
	for _, l := range imdsListeners {
		start(l, handler, "metadata")
		addrs = append(addrs, l.Addr().String())
	}
	healthAddr := ""
	if healthListener != nil {
		start(healthListener, health.Handler(cache, reg), "health")
		healthAddr = healthListener.Addr().String()
	}
	log.Info("listening", "imds_addrs", addrs, "health_addr", healthAddr, "sts_region", region,
		"served_region", placement.Region, "served_availability_zone", placement.AvailabilityZone)

	go cache.Run(ctx)
	go func() {
		if cache.WaitStarted(ctx) == nil {
			log.Info("started: first role credentials cached")
		}
	}()

	var runErr error
	select {
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

// listenIMDS binds --listen and, when that is 127.0.0.1, also [::1] on the
// same port: the init step DNATs [fd00:ec2::254]:80 there in IPv6 pods. A pod
// without IPv6 (no ::1, or no IPv6 at all) is normal and only logged.
// listen is net.Listen; tests pass a stand-in to play a pod without IPv6.
func listenIMDS(addr string, listen func(network, addr string) (net.Listener, error), log *slog.Logger) ([]net.Listener, error) {
	l, err := listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --listen=%s: %w", addr, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	if host != "127.0.0.1" {
		return []net.Listener{l}, nil
	}
	port := l.Addr().(*net.TCPAddr).Port // the real port, also when addr asked for 0
	l6, err := listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(port)))
	switch {
	case err == nil:
		return []net.Listener{l, l6}, nil
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EAFNOSUPPORT):
		log.Debug("no IPv6 loopback in this pod; serving IPv4 only", "err", err)
		return []net.Listener{l}, nil
	default:
		// Someone else holding [::1]:port would receive the pod's IPv6
		// metadata traffic: refuse to start rather than let that happen.
		l.Close()
		return nil, fmt.Errorf("listen on [::1]:%d (IPv6 metadata redirect target): %w", port, err)
	}
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// nodePlacement reads region, zone and identity document from the node's
// IMDS, falling back to --region / --availability-zone. client is the
// agent's marked client, which never uses a proxy for the node's IMDS (it
// refuses proxied token requests, and must be reached directly).
func nodePlacement(ctx context.Context, cfg contract.ServeConfig, client nodemeta.Doer, log *slog.Logger) nodemeta.Metadata {
	ctx, cancel := context.WithTimeout(ctx, nodeMetadataTimeout)
	defer cancel()
	node, err := nodemeta.Fetch(ctx, client, cfg.NodeMetadataEndpoint)
	if err != nil {
		log.Warn("reading the node's metadata failed; falling back to --region/--availability-zone",
			"endpoint", cfg.NodeMetadataEndpoint, "err", err)
	}
	md := nodemeta.Resolve(node, cfg.Region, cfg.AvailabilityZone)
	log.Info("node metadata", "node_region", node.Region, "node_availability_zone", node.AvailabilityZone,
		"node_identity_document", node.IdentityDocument != nil, "region", md.Region, "availability_zone", md.AvailabilityZone)
	return md
}

func newSource(ctx context.Context, cfg contract.ServeConfig, session, region string, client assume.HTTPClient) (creds.Source, error) {
	ac := assume.Config{
		RoleARN: cfg.RoleARN, SessionName: session, ExternalID: cfg.ExternalID,
		Duration: cfg.SessionDuration, Region: region, STSEndpoint: cfg.STSEndpoint,
		HTTPClient: client,
	}
	switch cfg.Source {
	case contract.SourceWebIdentity:
		return assume.NewWebIdentity(ac, cfg.TokenFile)
	default:
		return assume.NewNode(ctx, ac, cfg.NodeMetadataEndpoint)
	}
}
