package pen

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// clientTimeout bounds a whole control exchange (Pen's penctl has none).
const clientTimeout = 30 * time.Second

// Send sends one command over Pen's plain-text control protocol to addr
// (host:port, or a Unix socket path containing "/") and copies the reply,
// which ends when the server closes the connection, to w.
func Send(addr string, args []string, w io.Writer) error {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("error connecting to server: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(clientTimeout))
	if _, err := io.WriteString(c, strings.Join(args, " ")+"\n"); err != nil {
		return err
	}
	_, err = io.Copy(w, c)
	return err
}
