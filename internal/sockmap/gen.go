package sockmap

// The program (bpf/relay.c; in a directory of its own because the go
// command refuses C files in a package that does not use cgo) is compiled
// for both byte orders (bpfel: amd64, arm64, ...; bpfeb: s390x, ...) into
// relay_bpfel.o and relay_bpfeb.o, which are committed with their Go
// bindings: building nib needs no C compiler. Regenerating needs clang,
// llvm-strip and the libbpf and Linux UAPI headers (Debian: clang, llvm,
// libbpf-dev, linux-libc-dev); the same clang gives the same files.
// bpf/include/asm stands in for the multiarch asm directory, which the BPF
// target lacks, so the output does not depend on the build machine's
// architecture. Nothing needs BTF from the kernel.
//
//go:generate go tool bpf2go -tags linux -target bpfel,bpfeb -output-stem relay relay bpf/relay.c -- -Wall -Werror -Ibpf/include
