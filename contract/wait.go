package contract

import (
	"flag"
	"fmt"
	"net/url"
	"time"
)

// WaitConfig is the command line of `podrole-sidecar wait`: poll URL until it
// answers 2xx, or fail after Timeout. The webhook's legacy sidecar mode runs it
// as the agent's postStart hook, so the kubelet holds the app containers until
// the agent has its first credentials (the kubelet starts containers in order
// and runs each postStart hook before starting the next container).
type WaitConfig struct {
	URL       string
	Timeout   time.Duration
	IgnoreEnv bool // see ServeConfig.IgnoreEnv
}

// DefaultWaitConfig returns the defaults of every wait flag.
func DefaultWaitConfig() WaitConfig {
	return WaitConfig{URL: fmt.Sprintf("http://127.0.0.1:%d%s", DefaultHealthPort, PathStarted), Timeout: time.Minute}
}

// RegisterFlags binds c's fields to fs, with c's current values as defaults.
func (c *WaitConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "url", c.URL, "URL to poll until it answers 2xx (the agent's /started)")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "give up (exit 1) after this long")
	ignoreEnvFlag(fs, &c.IgnoreEnv)
}

// Args renders c as `wait` arguments, omitting values equal to the defaults.
func (c WaitConfig) Args() []string {
	d := DefaultWaitConfig()
	args := []string{"wait"}
	if c.URL != d.URL {
		args = append(args, "--url="+c.URL)
	}
	if c.Timeout != d.Timeout {
		args = append(args, "--timeout="+c.Timeout.String())
	}
	if c.IgnoreEnv {
		args = append(args, "--ignore-env")
	}
	return args
}

// Validate reports the first problem with c.
func (c WaitConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url=%q is not an http(s) URL: give the agent's started URL, e.g. http://127.0.0.1:%d%s", c.URL, DefaultHealthPort, PathStarted)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout=%s must be positive", c.Timeout)
	}
	return nil
}
