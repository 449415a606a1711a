// Package tarpit builds the stateless SYN+ACK with which nib answers TCP SYNs to tarpitted addresses.
package tarpit
