package appliance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CheckTargetDevice refuses to write an image onto a device that is not a
// whole block device, is mounted (it or one of its partitions), or holds the
// running system's root.
func CheckTargetDevice(dev string) error {
	st, err := os.Stat(dev)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("%s is not a block device", dev)
	}
	real, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return err
	}
	name := filepath.Base(real)
	if _, err := os.Stat(filepath.Join("/sys/block", name)); err != nil {
		return fmt.Errorf("%s is not a whole disk (write the card, not a partition)", dev)
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	parts := diskPartitions(name)
	if disk, ok := MountedOn(string(mounts), "/", parts); ok {
		return fmt.Errorf("%s holds the running system (/ is on %s)", dev, disk)
	}
	if m, ok := MountedAny(string(mounts), parts); ok {
		return fmt.Errorf("%s is mounted (%s); unmount it first", dev, m)
	}
	return nil
}

// diskPartitions lists /dev names of a disk and its partitions.
func diskPartitions(name string) []string {
	out := []string{"/dev/" + name}
	entries, _ := os.ReadDir(filepath.Join("/sys/block", name))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name) {
			out = append(out, "/dev/"+e.Name())
		}
	}
	return out
}

// MountedOn reports whether mountpoint is mounted from one of devs, given
// /proc/self/mounts.
func MountedOn(mounts, mountpoint string, devs []string) (string, bool) {
	for _, m := range parseMounts(mounts) {
		if m[1] == mountpoint && containsDev(devs, m[0]) {
			return m[0], true
		}
	}
	return "", false
}

// MountedAny returns the first mount of one of devs.
func MountedAny(mounts string, devs []string) (string, bool) {
	for _, m := range parseMounts(mounts) {
		if containsDev(devs, m[0]) {
			return m[0] + " on " + m[1], true
		}
	}
	return "", false
}

func containsDev(devs []string, d string) bool {
	if r, err := filepath.EvalSymlinks(d); err == nil {
		d = r
	}
	for _, x := range devs {
		if x == d {
			return true
		}
	}
	return false
}

func parseMounts(s string) [][2]string {
	var out [][2]string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 {
			out = append(out, [2]string{f[0], f[1]})
		}
	}
	return out
}

// WriteDevice copies the image onto dev, with progress, and syncs.
func WriteDevice(ctx context.Context, image, dev string, log io.Writer) error {
	if err := CheckTargetDevice(dev); err != nil {
		return err
	}
	src, err := os.Open(image)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	dst, err := os.OpenFile(dev, os.O_WRONLY|os.O_EXCL, 0)
	if err != nil {
		return err
	}
	defer dst.Close()
	p := newProgress(log, "writing "+dev, st.Size())
	buf := make([]byte, 4*MiB)
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
			p.update(done)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if err := dst.Sync(); err != nil {
		return err
	}
	p.finish()
	return nil
}

// progress prints a line at most every second: bytes done of total.
type progress struct {
	w     io.Writer
	what  string
	total int64
	last  time.Time
	start time.Time
}

func newProgress(w io.Writer, what string, total int64) *progress {
	return &progress{w: w, what: what, total: total, start: time.Now()}
}

func (p *progress) update(done int64) {
	if time.Since(p.last) < time.Second || p.total < MiB {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "  %s: %d/%d MiB (%d%%)\n", p.what, done/MiB, p.total/MiB, 100*done/max(p.total, 1))
}

func (p *progress) finish() {
	if p.total < MiB {
		fmt.Fprintf(p.w, "  %s: %d bytes in %.1fs\n", p.what, p.total, time.Since(p.start).Seconds())
		return
	}
	fmt.Fprintf(p.w, "  %s: %d MiB in %.1fs\n", p.what, p.total/MiB, time.Since(p.start).Seconds())
}
