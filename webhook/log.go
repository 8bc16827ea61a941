package main

import (
	"io"
	"log/slog"

	"k8s.io/klog/v2"
)

// newLogger is the webhook's one log format: JSON lines on w from level up.
// It also makes the logger klog's (client-go's logger), so that the
// informers' and the REST client's messages are JSON lines in the same
// stream rather than klog's text on stderr: with a logger set, klog writes
// nothing itself, and its flags are never registered. client-go's
// contextual V(n) logs become slog level -n (--log-level=debug shows V(4)
// and below); its klog.V(n) calls stay filtered by klog's verbosity, 0.
// klog keeps one process-wide logger: the last call wins.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	klog.SetSlogLogger(log)
	return log
}
