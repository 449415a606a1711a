package appliance

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
)

// The disk layout gokrazy's runtime and update protocol expect (gok's
// defaults for the Raspberry Pi): 512-byte sectors, the boot FAT at 4 MiB,
// two 500 MiB root partitions for A/B updates, /perm on the rest.
const (
	SectorSize = 512
	MiB        = 1 << 20

	BootStart  = 8192            // LBA of partition 1 (4 MiB)
	BootSize   = 100 * MiB / 512 // 204800 sectors
	RootSize   = 500 * MiB / 512 // 1024000 sectors each
	RootAStart = BootStart + BootSize
	RootBStart = RootAStart + RootSize
	PermStart  = RootBStart + RootSize // 2260992: 4 MiB + 1100 MiB

	// DefaultPermSize is /perm's size in an image file (the card's space
	// beyond the image stays unused; gok does the same).
	DefaultPermSize = 256 * MiB
)

// Partuuid is gok's disk signature for a hostname: FNV-1a 32 of the name.
// It goes into the MBR at byte 440 and into root=PARTUUID=<sig>-0N, so it
// must stay the same across builds for updates to find the disk.
func Partuuid(hostname string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(hostname))
	return h.Sum32()
}

// Partition is one MBR entry.
type Partition struct {
	Bootable bool
	Type     byte
	Start    uint32 // LBA
	Sectors  uint32
}

// Partitions returns the four partitions of a disk of totalSectors.
func Partitions(totalSectors uint64) ([4]Partition, error) {
	if totalSectors <= PermStart+2048 {
		return [4]Partition{}, fmt.Errorf("disk of %d sectors is too small: /perm starts at sector %d", totalSectors, PermStart)
	}
	if totalSectors > 1<<32-1 {
		return [4]Partition{}, fmt.Errorf("disk of %d sectors is too large for an MBR", totalSectors)
	}
	return [4]Partition{
		{Bootable: true, Type: 0x0c, Start: BootStart, Sectors: BootSize}, // FAT (LBA)
		{Type: 0x83, Start: RootAStart, Sectors: RootSize},
		{Type: 0x83, Start: RootBStart, Sectors: RootSize},
		{Type: 0x83, Start: PermStart, Sectors: uint32(totalSectors - PermStart)},
	}, nil
}

// MBR returns the first sector: no boot code, the disk signature at 440 (the
// runtime's rootdev finds the disk by it and requires bytes 444-445 zero),
// four primary partitions and the 0x55AA signature. CHS fields hold the
// "use LBA" marker FE FF FF, as gok writes them.
func MBR(sig uint32, parts [4]Partition) [SectorSize]byte {
	var b [SectorSize]byte
	binary.LittleEndian.PutUint32(b[440:], sig)
	for i, p := range parts {
		e := b[446+16*i : 446+16*(i+1)]
		if p.Bootable {
			e[0] = 0x80
		}
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], p.Start)
		binary.LittleEndian.PutUint32(e[12:], p.Sectors)
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

// RootParam is root= for partition n (2 or 3) in the MBR PARTUUID form the
// runtime's rootdev parses: lower-case hex, compared as written.
func RootParam(sig uint32, n int) string {
	return fmt.Sprintf("root=PARTUUID=%08x-%02d", sig, n)
}

var rootRE = regexp.MustCompile(`root=[^ ]+`)

// cmdlinePad is the room gok leaves after the command line, so the runtime
// can rewrite root= in place with a longer value.
const cmdlinePad = 64

// Cmdline builds cmdline.txt: consoles, the kernel package's own command
// line with its root= replaced by the PARTUUID form for root A, and
// padding. serial is the instance's SerialConsole ("" = serial0,115200 as
// gok; "off"/"disabled" = none).
func Cmdline(kernelCmdline string, sig uint32, serial string) string {
	var sb strings.Builder
	sb.WriteString("console=tty1 ")
	switch serial {
	case "", "UART0":
		sb.WriteString("console=serial0,115200 ")
	case "off", "disabled":
	default:
		sb.WriteString("console=" + serial + " ")
	}
	kc := strings.TrimSpace(kernelCmdline)
	if rootRE.MatchString(kc) {
		kc = rootRE.ReplaceAllLiteralString(kc, RootParam(sig, 2))
	} else {
		kc = RootParam(sig, 2) + " " + kc
	}
	// kernel.arm64's cmdline.txt lacks rootwait; a virtio disk may appear
	// after the kernel first looks for root.
	if !strings.Contains(" "+kc+" ", " rootwait ") {
		kc += " rootwait"
	}
	sb.WriteString(kc)
	sb.WriteString(strings.Repeat(" ", cmdlinePad))
	return sb.String()
}

// ActiveRoot returns the root partition number (2 or 3) that a cmdline.txt
// boots, checking the disk signature.
func ActiveRoot(cmdline string, sig uint32) (int, error) {
	m := rootRE.FindString(cmdline)
	if m == "" {
		return 0, fmt.Errorf("cmdline.txt has no root=")
	}
	for _, n := range []int{2, 3} {
		if m == RootParam(sig, n) {
			return n, nil
		}
	}
	return 0, fmt.Errorf("cmdline.txt: %s is not root A or B of disk %08x", m, sig)
}

// ConfigTxt returns config.txt for the Pi firmware: the kernel package's,
// with the UART enabled unless the serial console is off, then the extra
// lines.
func ConfigTxt(kernelConfig, serial string, extra []string) string {
	s := kernelConfig
	if serial != "off" && serial != "disabled" {
		s = strings.ReplaceAll(s, "enable_uart=0", "enable_uart=1")
	}
	if len(extra) > 0 {
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += strings.Join(extra, "\n") + "\n"
	}
	return s
}
