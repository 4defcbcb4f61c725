package reporters

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// lineBufferSize is the buffer of a JSON-lines writer: large enough that a
// busy file sink writes in big chunks, small enough to lose little on a
// crash (it is flushed every FlushInterval anyway).
const lineBufferSize = 64 << 10

// lineSink writes records as JSON lines through a buffer that a background
// loop flushes every interval (and Close flushes at the end). It serves the
// file and stdout sinks; all writers of one file share one lineSink.
type lineSink struct {
	typ string
	// mu guards w, dirty, err and closed.
	mu     sync.Mutex
	out    io.WriteCloser
	w      *bufio.Writer
	dirty  bool
	err    error // the first write error; the sink is broken after it
	closed bool

	stop chan struct{}
	done chan struct{}
}

func newLineSink(typ string, out io.WriteCloser, flushEvery time.Duration) *lineSink {
	s := &lineSink{
		typ:  typ,
		out:  out,
		w:    bufio.NewWriterSize(out, lineBufferSize),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.flushLoop(flushEvery)
	return s
}

// openFileSink opens (appending, creating it and its directories) the file
// rel under dir. rel was checked by ParseSinkSpec; it is checked again here
// because a Sink can be opened from a spec built in code.
func openFileSink(dir, rel string, flushEvery time.Duration) (*lineSink, error) {
	if dir == "" {
		return nil, errors.New("file sink: the node has no sink directory configured")
	}
	if err := checkFileTarget(rel); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	path := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	return newLineSink(SinkFile, f, flushEvery), nil
}

func (s *lineSink) Type() string { return s.typ }

// Write appends data and a newline. Data that spans lines (a guest's
// pretty-printed JSON) is compacted first, so that one record is always
// one line; JSON strings cannot hold a raw newline, so any newline in valid
// JSON is whitespace.
func (s *lineSink) Write(_ context.Context, data []byte) error {
	if bytes.ContainsAny(data, "\r\n") {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return fmt.Errorf("%s sink: record is not valid JSON: %w", s.typ, err)
		}
		data = buf.Bytes()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("%s sink: %w", s.typ, ErrClosed)
	case s.err != nil:
		return s.err
	}
	if _, err := s.w.Write(data); err != nil {
		return s.failLocked(err)
	}
	if err := s.w.WriteByte('\n'); err != nil {
		return s.failLocked(err)
	}
	s.dirty = true
	return nil
}

func (s *lineSink) failLocked(err error) error {
	s.err = fmt.Errorf("%s sink: %w", s.typ, err)
	return s.err
}

// Flush writes out what is buffered.
func (s *lineSink) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

func (s *lineSink) flushLocked() error {
	if !s.dirty || s.err != nil {
		return s.err
	}
	s.dirty = false
	if err := s.w.Flush(); err != nil {
		return s.failLocked(err)
	}
	return nil
}

func (s *lineSink) flushLoop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_ = s.Flush() // the error is kept and returned by the next Write
		}
	}
}

// Close stops the flush loop, flushes and closes the file.
func (s *lineSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.flushLocked(), s.out.Close())
}

// nopCloser keeps Close from closing the process's stdout.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
