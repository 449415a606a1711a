package appliance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// FAT is a read-only view of a FAT16 boot partition that finds files by the
// rules of the gokrazy runtime's own reader, which the runtime uses to
// rewrite cmdline.txt during an update:
//   - the root directory starts at (reserved + sectors per FAT) sectors: the
//     FAT count is ignored, so the partition must have exactly one FAT;
//   - FAT32 is not understood (its BPB has no root directory entries);
//   - a file is its first cluster and its size: it must not be fragmented,
//     since the runtime reads and writes it in place.
//
// nib's builder checks every image it writes with this view, and the VM
// runner reads cmdline.txt and the kernel through it at every boot.
type FAT struct {
	r                 io.ReaderAt
	bytesPerSector    int64
	sectorsPerCluster int64
	reserved          int64
	numFATs           int
	rootEntries       int64
	fatSectors        int64
	totalSectors      int64
}

// OpenFAT reads the BPB of the FAT16 file system at the start of r and
// checks that the runtime can read it.
func OpenFAT(r io.ReaderAt) (*FAT, error) {
	var bpb [64]byte
	if _, err := r.ReadAt(bpb[:], 0); err != nil {
		return nil, fmt.Errorf("fat: reading boot sector: %w", err)
	}
	f := &FAT{
		r:                 r,
		bytesPerSector:    int64(binary.LittleEndian.Uint16(bpb[11:])),
		sectorsPerCluster: int64(bpb[13]),
		reserved:          int64(binary.LittleEndian.Uint16(bpb[14:])),
		numFATs:           int(bpb[16]),
		rootEntries:       int64(binary.LittleEndian.Uint16(bpb[17:])),
		fatSectors:        int64(binary.LittleEndian.Uint16(bpb[22:])),
		totalSectors:      int64(binary.LittleEndian.Uint16(bpb[19:])),
	}
	if f.totalSectors == 0 {
		f.totalSectors = int64(binary.LittleEndian.Uint32(bpb[32:]))
	}
	switch {
	case f.bytesPerSector != 512:
		return nil, fmt.Errorf("fat: %d bytes per sector, want 512", f.bytesPerSector)
	case f.sectorsPerCluster == 0:
		return nil, errors.New("fat: zero sectors per cluster")
	case f.rootEntries == 0 || f.fatSectors == 0:
		return nil, errors.New("fat: not FAT16 (FAT32 has no fixed root directory); the gokrazy runtime cannot read it")
	case f.numFATs != 1:
		return nil, fmt.Errorf("fat: %d FATs; the gokrazy runtime's reader assumes exactly one", f.numFATs)
	}
	if c := f.clusters(); c < 4085 || c > 65524 {
		return nil, fmt.Errorf("fat: %d clusters is not FAT16", c)
	}
	return f, nil
}

func (f *FAT) rootOffset() int64 { return (f.reserved + f.fatSectors) * f.bytesPerSector }

func (f *FAT) dataOffset() int64 {
	rootBytes := f.rootEntries * 32
	sectors := (rootBytes + f.bytesPerSector - 1) / f.bytesPerSector
	return f.rootOffset() + sectors*f.bytesPerSector
}

func (f *FAT) clusters() int64 {
	data := f.totalSectors - f.dataOffset()/f.bytesPerSector
	return data / f.sectorsPerCluster
}

func (f *FAT) clusterOffset(c int64) int64 {
	return f.dataOffset() + (c-2)*f.sectorsPerCluster*f.bytesPerSector
}

// shortName is the upper-cased 8.3 form of a path element, as stored.
func shortName(elem string) string {
	name, ext := elem, ""
	if i := strings.LastIndexByte(elem, '.'); i > 0 {
		name, ext = elem[:i], elem[i+1:]
	}
	s := strings.ToUpper(name)
	if ext != "" {
		s += "." + strings.ToUpper(ext)
	}
	return s
}

// entryName is a directory entry's 8.3 name as NAME.EXT.
func entryName(e []byte) string {
	name := strings.TrimRight(string(e[0:8]), " ")
	ext := strings.TrimRight(string(e[8:11]), " ")
	if ext != "" {
		name += "." + ext
	}
	return name
}

// Extent is where a file's bytes lie within the partition.
type Extent struct {
	Offset, Size int64
}

// Lookup finds an absolute path ("/cmdline.txt", "/overlays/x.dtbo") and
// checks that its clusters are contiguous.
func (f *FAT) Lookup(path string) (Extent, error) {
	if !strings.HasPrefix(path, "/") {
		return Extent{}, fmt.Errorf("fat: %q: want an absolute path", path)
	}
	dir := f.rootOffset()
	elems := strings.Split(path[1:], "/")
	for i, elem := range elems {
		e, err := f.findEntry(dir, shortName(elem))
		if err != nil {
			return Extent{}, fmt.Errorf("fat: %q: %w", path, err)
		}
		attr := e[11]
		first := int64(binary.LittleEndian.Uint16(e[26:]))
		size := int64(binary.LittleEndian.Uint32(e[28:]))
		if i < len(elems)-1 {
			if attr&0x10 == 0 {
				return Extent{}, fmt.Errorf("fat: %q: %s is not a directory", path, elem)
			}
			if first < 2 || f.clusterOffset(first) >= f.totalSectors*f.bytesPerSector {
				return Extent{}, fmt.Errorf("fat: %q: directory %s beyond the file system", path, elem)
			}
			dir = f.clusterOffset(first)
			continue
		}
		if attr&0x10 != 0 {
			return Extent{}, fmt.Errorf("fat: %q is a directory", path)
		}
		if end := f.clusterOffset(first) + size; first < 2 || end > f.totalSectors*f.bytesPerSector {
			if size > 0 {
				return Extent{}, fmt.Errorf("fat: %q: extent beyond the file system", path)
			}
		}
		if size > 0 {
			if err := f.checkContiguous(first, size); err != nil {
				return Extent{}, fmt.Errorf("fat: %q: %w", path, err)
			}
		}
		return Extent{Offset: f.clusterOffset(first), Size: size}, nil
	}
	return Extent{}, fmt.Errorf("fat: %q not found", path)
}

// findEntry scans rootEntries entries at dir, as the runtime does (also in
// subdirectories).
func (f *FAT) findEntry(dir int64, want string) ([]byte, error) {
	buf := make([]byte, f.rootEntries*32)
	n, err := f.r.ReadAt(buf, dir)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return nil, err
	}
	buf = buf[:n-n%32]
	for off := 0; off < len(buf); off += 32 {
		e := buf[off : off+32]
		switch {
		case e[0] == 0: // end of directory
			return nil, errors.New("not found")
		case e[0] == 0xe5, e[11] == 0x0f, e[11]&0x08 != 0: // deleted, long name, label
			continue
		}
		if entryName(e) == want {
			return e, nil
		}
	}
	return nil, errors.New("not found")
}

// checkContiguous follows the FAT chain from first and requires each next
// cluster to be the one after it, and the chain to be long enough for size.
func (f *FAT) checkContiguous(first, size int64) error {
	clusterBytes := f.sectorsPerCluster * f.bytesPerSector
	need := (size + clusterBytes - 1) / clusterBytes
	fatOff := f.reserved * f.bytesPerSector
	buf := make([]byte, 2*need+2)
	if _, err := f.r.ReadAt(buf, fatOff+2*first); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	for i := int64(0); i < need; i++ {
		next := int64(binary.LittleEndian.Uint16(buf[2*i:]))
		last := i == need-1
		switch {
		case last && next >= 0xfff8:
			return nil
		case last:
			return fmt.Errorf("cluster chain longer than the file")
		case next != first+i+1:
			return fmt.Errorf("fragmented (cluster %d is followed by %d): the gokrazy runtime reads files in place", first+i, next)
		}
	}
	return nil
}

// ReadFile returns a file's contents.
func (f *FAT) ReadFile(path string) ([]byte, error) {
	ext, err := f.Lookup(path)
	if err != nil {
		return nil, err
	}
	b := make([]byte, ext.Size)
	if _, err := f.r.ReadAt(b, ext.Offset); err != nil {
		return nil, fmt.Errorf("fat: reading %q: %w", path, err)
	}
	return b, nil
}
