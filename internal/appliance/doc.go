// Package appliance builds, boots and updates nib's gokrazy appliance without
// gok: it reads the gok instance config (gokrazy/nib/config.json), builds the
// programs for linux/arm64, assembles the SD-card image (MBR, FAT16 boot
// partition, gzip squashfs root, ext4 /perm) with Debian's tools, runs it in
// QEMU the way the Pi firmware would, and speaks gokrazy's update protocol.
//
// The byte layouts the gokrazy runtime depends on (the partition table and
// its disk signature, cmdline.txt's root=, the FAT16 rules of the runtime's
// reader) are pure functions here with table tests; the steps that run tools
// only call them.
package appliance
