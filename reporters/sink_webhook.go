package reporters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// maxWebhookBackoff caps the pause between webhook attempts.
const maxWebhookBackoff = 2 * time.Second

// webhookSink POSTs each record's data as application/json. An attempt
// that fails on the network or gets a 5xx answer is retried, up to retries
// times, after a pause that doubles from backoff (with jitter); a 4xx
// answer is the receiver refusing the record, and is not retried.
type webhookSink struct {
	url     string
	client  *http.Client
	timeout time.Duration
	retries int
	backoff time.Duration
}

func newWebhookSink(url string, client *http.Client, timeout time.Duration, retries int, backoff time.Duration) *webhookSink {
	return &webhookSink{url: url, client: client, timeout: timeout, retries: retries, backoff: backoff}
}

func (s *webhookSink) Type() string { return SinkWebhook }

// Close has nothing to release: the http.Client belongs to the caller.
func (s *webhookSink) Close() error { return nil }

// statusError is a webhook's non-2xx answer.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string {
	if e.body == "" {
		return fmt.Sprintf("answered HTTP %d", e.status)
	}
	return fmt.Sprintf("answered HTTP %d: %s", e.status, e.body)
}

func (s *webhookSink) Write(ctx context.Context, data []byte) error {
	pause := s.backoff
	var err error
	for attempt := 0; ; attempt++ {
		err = s.post(ctx, data)
		var se *statusError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &se) && se.status < 500:
			return fmt.Errorf("webhook %s: %w (not retried)", s.url, err)
		case ctx.Err() != nil:
			return fmt.Errorf("webhook %s: %w", s.url, err)
		case attempt >= s.retries:
			return fmt.Errorf("webhook %s: %w (after %d attempts)", s.url, err, attempt+1)
		}
		wait := pause/2 + rand.N(pause/2+1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("webhook %s: %w (then %w)", s.url, err, ctx.Err())
		case <-time.After(wait):
		}
		pause = min(2*pause, maxWebhookBackoff)
	}
}

func (s *webhookSink) post(ctx context.Context, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "coordinatord-reporter")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Read a little of the answer for the error, and drain a little more so
	// the connection can be reused.
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return &statusError{status: resp.StatusCode, body: string(bytes.TrimSpace(head))}
	}
	return nil
}
