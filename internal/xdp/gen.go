package xdp

// The program, bpf/dsr.c (in a directory of its own: the go command refuses
// C files in a package that does not use cgo), is compiled for both byte
// orders (bpfel: amd64, arm64, ...; bpfeb: s390x, ...) into dsr_bpfel.o and
// dsr_bpfeb.o, which are committed with their Go bindings, so building nib
// needs no C compiler.
//
// Regenerating (go generate ./internal/xdp) needs clang, llvm-strip and the
// libbpf and Linux UAPI headers: the Debian packages clang, llvm, libbpf-dev
// and linux-libc-dev. The same clang gives the same files: bpf2go keeps
// paths relative and clang's version out of the object, and strips DWARF
// (llvm-strip -g) but keeps the object's own BTF, which describes the maps
// (nothing needs BTF from the kernel). bpf/include/asm stands in for the
// multiarch asm directory, which the BPF target lacks, so the output does not
// depend on the build machine's architecture either.
//
//go:generate go tool bpf2go -tags linux -target bpfel,bpfeb -output-stem dsr dsr bpf/dsr.c -- -Wall -Werror -Ibpf/include
