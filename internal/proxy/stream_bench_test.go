package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// BenchmarkStreamHTTPRequests measures keep-alive requests through the
// HTTP stream path (X-Forwarded-For rewriting, response following).
func BenchmarkStreamHTTPRequests(b *testing.B) {
	be := newStreamBackend(b, false)
	ss := startStream(b, Options{HTTP: true}, be.addr())
	c, err := net.Dial("tcp", ss.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		c.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
}

// BenchmarkStreamBulk measures a bulk download through the HTTP stream path.
func BenchmarkStreamBulk(b *testing.B) {
	const size = 64 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		chunk := make([]byte, 256<<10)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
					for sent := 0; sent < size; sent += len(chunk) {
						if _, err := c.Write(chunk); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	ss := startStream(b, Options{HTTP: true}, ln.Addr().(*net.TCPAddr).AddrPort())
	c, err := net.Dial("tcp", ss.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Hour))
	br := bufio.NewReaderSize(c, 256<<10)
	b.SetBytes(size)
	for b.Loop() {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
}

// BenchmarkStreamTLSUpload measures a bulk upload through TLS termination:
// the client side's reads go through crypto/tls.
func BenchmarkStreamTLSUpload(b *testing.B) {
	const size = 64 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReaderSize(c, 256<<10)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
				}
			}()
		}
	}()
	ss := startStream(b, Options{HTTP: true, TLS: &tls.Config{Certificates: []tls.Certificate{selfSigned(b)}}}, ln.Addr().(*net.TCPAddr).AddrPort())
	c, err := tls.Dial("tcp", ss.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	chunk := make([]byte, 256<<10)
	b.SetBytes(size)
	for b.Loop() {
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n")
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}
