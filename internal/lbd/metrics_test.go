package lbd

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// GET /metrics end to end, through an appliance-mode lbd: the collector
// reads the same snapshot as /api/v1/status.
func TestControlAPIMetrics(t *testing.T) {
	x := startAPIAppliance(t)
	a, dummyAddr, svcAddr := x.a, x.dummyAddr, x.svcAddr

	bad := *a
	bad.token = ""
	if code, body := bad.do("GET", "/metrics", ""); code != 401 {
		t.Errorf("no token: %d %s", code, body)
	}

	resp, err := http.Get("http://" + svcAddr.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	be := fmt.Sprintf(`{backend=%q,index="0",service="web"}`, dummyAddr.String())
	want := []string{
		fmt.Sprintf(`lbd_build_info{version=%q} 1`, Version()),
		`lbd_service_connections_total{service="web"} 1`,
		"lbd_backend_up" + be + " 1",
		"lbd_backend_bytes_received_total" + be,
	}
	var code int
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body = a.do("GET", "/metrics", "")
		missing := false
		for _, w := range want {
			missing = missing || !strings.Contains(body, w)
		}
		if code == 200 && !missing || time.Now().After(deadline) {
			break
		}
	}
	if code != 200 {
		t.Fatalf("metrics: %d %s", code, body)
	}
	wantContains(t, "metrics", body, want...)
}
