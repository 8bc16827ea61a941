package main

import (
	"context"
	"fmt"
	"io"
)

// benchWebhook is filled in once the webhook's test apiserver helper lands.
func benchWebhook(ctx context.Context, o options, out io.Writer) error {
	return fmt.Errorf("not implemented yet")
}
