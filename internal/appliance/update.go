package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// UpdateOptions describe one over-the-air update.
type UpdateOptions struct {
	Image          string // the built image: root A, boot and MBR are sent from it
	Host           string // ADDR or ADDR:PORT
	DefaultPort    string // Update.HTTPPort, when Host has no port
	Password       string // the web UI password (user gokrazy)
	BuildTimestamp string // the new build's; the update is done when it answers
	Timeout        time.Duration
	Log            io.Writer
	Client         *http.Client
}

// Update speaks gokrazy's update protocol: PUT the root file system (to the
// inactive root partition), the boot partition and the MBR's first 446
// bytes, checking each SHA-256 the appliance replies; then switch root
// partitions, reboot, and wait until the new build timestamp answers. /perm
// is not touched.
func Update(ctx context.Context, o UpdateOptions) error {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	u := updater{o: o, base: "http://" + hostPort(o.Host, o.DefaultPort)}
	if u.c = o.Client; u.c == nil {
		u.c = &http.Client{}
	}
	d, err := OpenDisk(o.Image)
	if err != nil {
		return err
	}
	defer d.Close()
	_, n, err := d.Cmdline()
	if err != nil {
		return err
	}
	root, err := d.Root(n)
	if err != nil {
		return err
	}
	bootFAT := d.Section(1)

	cur, err := u.buildTimestamp(ctx)
	if err != nil {
		return fmt.Errorf("update: %s does not answer as a gokrazy appliance: %w", u.base, err)
	}
	fmt.Fprintf(o.Log, "update %s: running %s, new build %s\n", o.Host, cur, o.BuildTimestamp)
	if cur == o.BuildTimestamp {
		fmt.Fprintf(o.Log, "update: the appliance already runs this build; nothing to do\n")
		return nil
	}
	feat, err := u.get(ctx, "/update/features", "")
	if err != nil {
		return err
	}
	if !strings.Contains(feat, "partuuid") || !strings.Contains(feat, "updatehash") {
		return fmt.Errorf("update: the appliance's update API lacks features (has %q)", feat)
	}
	if strings.Contains(feat, "gpt") {
		return fmt.Errorf("update: the appliance boots from a GPT disk; nib images use an MBR (reflash it once)")
	}
	for _, p := range []struct {
		path string
		r    io.Reader
		size int64
	}{
		{"/update/root", root, root.Size()},
		{"/update/boot", bootFAT, bootFAT.Size()},
		{"/update/mbr", io.NewSectionReader(d.f, 0, 446), 446},
	} {
		if err := u.put(ctx, p.path, p.r, p.size); err != nil {
			return err
		}
	}
	if _, err := u.post(ctx, "/update/switch"); err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "  switched to the other root partition; rebooting\n")
	if _, err := u.post(ctx, "/reboot"); err != nil && !isReset(err) {
		return err
	}
	return u.wait(ctx)
}

func hostPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

type updater struct {
	o    UpdateOptions
	base string
	c    *http.Client
}

func (u *updater) do(ctx context.Context, method, path string, body io.Reader, size int64, accept string, timeout time.Duration) (string, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.base+path, body)
	if err != nil {
		return "", err
	}
	if body != nil {
		req.ContentLength = size
	}
	req.SetBasicAuth("gokrazy", u.o.Password)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := u.c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return "", fmt.Errorf("%s %s: 401 unauthorized: wrong password (http-password.txt)", method, path)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func (u *updater) get(ctx context.Context, path, accept string) (string, error) {
	return u.do(ctx, http.MethodGet, path, nil, 0, accept, 10*time.Second)
}

func (u *updater) post(ctx context.Context, path string) (string, error) {
	return u.do(ctx, http.MethodPost, path, nil, 0, "", 30*time.Second)
}

// put streams r and compares the appliance's digest with ours.
func (u *updater) put(ctx context.Context, path string, r io.Reader, size int64) error {
	h := sha256.New()
	p := newProgress(u.o.Log, "PUT "+path, size)
	body := io.TeeReader(r, h)
	body = &progressReader{r: body, p: p}
	reply, err := u.do(ctx, http.MethodPut, path, body, size, "", 0)
	if err != nil {
		if path == "/update/mbr" && strings.Contains(err.Error(), "not implemented") {
			return nil // gok ignores this too
		}
		return err
	}
	p.finish()
	if got, want := strings.TrimSpace(reply), hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("PUT %s: the appliance got SHA-256 %q, we sent %s: transfer corrupted, not switching", path, got, want)
	}
	return nil
}

type progressReader struct {
	r    io.Reader
	p    *progress
	done int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.done += int64(n)
	pr.p.update(pr.done)
	return n, err
}

// buildTimestamp asks the web UI (JSON) which build runs.
func (u *updater) buildTimestamp(ctx context.Context) (string, error) {
	b, err := u.do(ctx, http.MethodGet, "/", nil, 0, "application/json", 5*time.Second)
	if err != nil {
		return "", err
	}
	var st struct{ BuildTimestamp string }
	if err := json.Unmarshal([]byte(b), &st); err != nil {
		return "", fmt.Errorf("status is not JSON: %w", err)
	}
	return st.BuildTimestamp, nil
}

// wait polls until the new build answers.
func (u *updater) wait(ctx context.Context) error {
	deadline := time.Now().Add(u.o.Timeout)
	start := time.Now()
	last := ""
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		ts, err := u.buildTimestamp(ctx)
		if err == nil && ts == u.o.BuildTimestamp {
			fmt.Fprintf(u.o.Log, "update: %s runs the new build %s (after %.0fs)\n", u.o.Host, ts, time.Since(start).Seconds())
			return nil
		}
		msg := "rebooting"
		if err == nil {
			msg = "still running " + ts
		}
		if msg != last {
			fmt.Fprintf(u.o.Log, "  waiting: %s\n", msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return fmt.Errorf("update: %s did not come back with build %s within %v", u.o.Host, u.o.BuildTimestamp, u.o.Timeout)
}
