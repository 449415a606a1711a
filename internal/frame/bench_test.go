package frame

import "testing"

func BenchmarkParse(b *testing.B) {
	in := tcp4Data
	var f Frame
	b.ReportAllocs()
	for b.Loop() {
		if f.Parse(in) != nil {
			b.Fatal("parse")
		}
	}
}

func BenchmarkParseFlow(b *testing.B) {
	in := tcp4Data
	var f Frame
	var fl Flow
	b.ReportAllocs()
	for b.Loop() {
		_ = f.Parse(in)
		fl = f.Flow()
	}
	_ = fl
}

func BenchmarkRewriteMAC(b *testing.B) {
	in := append([]byte(nil), tcp4Data...)
	var f Frame
	b.ReportAllocs()
	for b.Loop() {
		_ = f.Parse(in)
		SetDstMAC(in, macClient)
		SetSrcMAC(in, macLB)
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	in := seq(1500)
	b.SetBytes(1500)
	b.ReportAllocs()
	for b.Loop() {
		Checksum(in, 0)
	}
}
