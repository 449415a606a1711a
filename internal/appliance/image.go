package appliance

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// Disk is a read-only view of an appliance image file (or card).
type Disk struct {
	f     *os.File
	MBR   [SectorSize]byte
	Sig   uint32
	Parts [4]Partition
}

// OpenDisk reads and checks an image's partition table.
func OpenDisk(name string) (*Disk, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	d := &Disk{f: f}
	if _, err := f.ReadAt(d.MBR[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: reading the MBR: %w", name, err)
	}
	if err := d.parseMBR(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func (d *Disk) parseMBR() error {
	b := d.MBR[:]
	if b[510] != 0x55 || b[511] != 0xaa {
		return fmt.Errorf("no MBR signature")
	}
	if b[444] != 0 || b[445] != 0 {
		return fmt.Errorf("MBR bytes 444-445 are not zero: the gokrazy runtime would not find its disk")
	}
	d.Sig = binary.LittleEndian.Uint32(b[440:])
	for i := range d.Parts {
		e := b[446+16*i:]
		d.Parts[i] = Partition{Bootable: e[0] == 0x80, Type: e[4],
			Start: binary.LittleEndian.Uint32(e[8:]), Sectors: binary.LittleEndian.Uint32(e[12:])}
	}
	want, err := Partitions(uint64(d.Parts[3].Start) + uint64(d.Parts[3].Sectors))
	if err != nil {
		return err
	}
	if d.Parts != want {
		return fmt.Errorf("partition table %+v is not the gokrazy layout %+v", d.Parts, want)
	}
	return nil
}

// Close closes the file.
func (d *Disk) Close() error { return d.f.Close() }

// Section returns partition n (1-4).
func (d *Disk) Section(n int) *io.SectionReader {
	p := d.Parts[n-1]
	return io.NewSectionReader(d.f, int64(p.Start)*SectorSize, int64(p.Sectors)*SectorSize)
}

// Boot opens the boot FAT as the runtime does.
func (d *Disk) Boot() (*FAT, error) { return OpenFAT(d.Section(1)) }

// Cmdline returns cmdline.txt and the root partition (2 or 3) it boots.
func (d *Disk) Cmdline() (string, int, error) {
	fat, err := d.Boot()
	if err != nil {
		return "", 0, err
	}
	b, err := fat.ReadFile("/cmdline.txt")
	if err != nil {
		return "", 0, err
	}
	n, err := ActiveRoot(string(b), d.Sig)
	return string(b), n, err
}

// SquashfsSize returns the bytes a squashfs uses (its superblock's
// bytes_used), checking the magic and that it is gzip-compressed: the only
// compression gokrazy's kernels mount.
func SquashfsSize(r io.ReaderAt) (int64, error) {
	var sb [96]byte
	if _, err := r.ReadAt(sb[:], 0); err != nil {
		return 0, err
	}
	if !bytes.Equal(sb[:4], []byte("hsqs")) {
		return 0, fmt.Errorf("no squashfs (magic %q)", sb[:4])
	}
	if comp := binary.LittleEndian.Uint16(sb[20:]); comp != 1 {
		return 0, fmt.Errorf("squashfs compression %d; the kernels mount only gzip (1)", comp)
	}
	if maj := binary.LittleEndian.Uint16(sb[28:]); maj != 4 {
		return 0, fmt.Errorf("squashfs version %d, want 4", maj)
	}
	return int64(binary.LittleEndian.Uint64(sb[40:])), nil
}

// Root returns the squashfs in partition n (2 or 3), sized to its content.
func (d *Disk) Root(n int) (*io.SectionReader, error) {
	sec := d.Section(n)
	size, err := SquashfsSize(sec)
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", n, err)
	}
	// mksquashfs pads the file to 4 KiB; send what it wrote.
	size = (size + 4095) &^ 4095
	if size > sec.Size() {
		return nil, fmt.Errorf("partition %d: squashfs of %d bytes overruns the partition", n, size)
	}
	return io.NewSectionReader(sec, 0, size), nil
}

// HasExt4 reports whether partition n holds an ext4 (or ext2/3) file system.
func (d *Disk) HasExt4(n int) bool {
	var m [2]byte
	_, err := d.Section(n).ReadAt(m[:], 1024+56)
	return err == nil && binary.LittleEndian.Uint16(m[:]) == 0xef53
}

// CheckImage verifies an image as the runtime and firmware will read it.
func CheckImage(name string, sig uint32) error {
	d, err := OpenDisk(name)
	if err != nil {
		return err
	}
	defer d.Close()
	if d.Sig != sig {
		return fmt.Errorf("%s: disk signature %08x, want %08x", name, d.Sig, sig)
	}
	_, n, err := d.Cmdline()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if _, err := d.Root(n); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if !d.HasExt4(4) {
		return fmt.Errorf("%s: /perm (partition 4) is not ext4", name)
	}
	return nil
}
