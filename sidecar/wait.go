package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/podrole/podrole/contract"
)

// runWait polls the agent's /started until it answers 2xx. In legacy sidecar
// mode (no native sidecars) the webhook runs it as the agent's postStart
// hook: the kubelet starts the pod's containers in order and waits for each
// postStart hook, so the app containers start only once credentials are cached.
func runWait(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := contract.DefaultWaitConfig()
	if help, err := parseFlags("wait", args, stderr, cfg.RegisterFlags, func() error { return cfg.Validate() }); help || err != nil {
		return err
	}
	return waitStarted(ctx, cfg, 100*time.Millisecond)
}

func waitStarted(ctx context.Context, cfg contract.WaitConfig, every time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", cfg.URL, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			last = resp.Status
		} else if ctx.Err() == nil || last == "" {
			// Our own deadline cutting a request short is not the agent's
			// answer: keep the last one it gave, which says why it is not started.
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the agent did not report started at %s within %s (last answer: %s): see `kubectl logs POD -c %s`",
				cfg.URL, cfg.Timeout, last, contract.AgentContainerName)
		case <-time.After(every):
		}
	}
}
