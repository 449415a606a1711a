/* The BPF target has no asm/ directory of its own: the generic one fits
 * (64-bit longs). See ../../../gen.go. */
#include <asm-generic/bitsperlong.h>
