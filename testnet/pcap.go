package testnet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"
)

// pcap capture files, written by hand: the classic libpcap format (a global
// header, then a record header before each frame), microsecond timestamps,
// link type Ethernet. Wireshark and tcpdump -r read it.
const (
	pcapMagic    = 0xa1b2c3d4
	pcapSnapLen  = 65535
	pcapEthernet = 1
)

type pcapWriter struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

func newPcapWriter(path string) (*pcapWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	p := &pcapWriter{f: f, w: bufio.NewWriterSize(f, 256<<10)}
	var h [24]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], pcapMagic)
	le.PutUint16(h[4:], 2) // version 2.4
	le.PutUint16(h[6:], 4)
	// thiszone and sigfigs stay zero
	le.PutUint32(h[16:], pcapSnapLen)
	le.PutUint32(h[20:], pcapEthernet)
	if _, err := p.w.Write(h[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap: %w", err)
	}
	return p, nil
}

// write records one frame seen at ts.
func (p *pcapWriter) write(ts time.Time, frame []byte) error {
	incl := min(len(frame), pcapSnapLen)
	var h [16]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(ts.Unix()))
	le.PutUint32(h[4:], uint32(ts.Nanosecond()/1000))
	le.PutUint32(h[8:], uint32(incl))
	le.PutUint32(h[12:], uint32(len(frame)))
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.w.Write(h[:]); err != nil {
		return err
	}
	_, err := p.w.Write(frame[:incl])
	return err
}

func (p *pcapWriter) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.w.Flush()
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	return err
}
