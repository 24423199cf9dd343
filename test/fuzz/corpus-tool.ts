// Makes the checked-in seed corpora of the libFuzzer targets (scripts/fuzz.sh --make-corpus runs it).
//   frame PCAP OUTDIR    frames captured on the testbed (tcpdump in `lb` on the link to hostA) that were
//                        addressed to capybara (10.77.1.10, or ARP broadcasts), in fuzz_frame's input
//                        format: one seed per TCP connection (all its inbound segments, in order) and one
//                        with the ARP and ICMP frames. Unicast destination MACs are rewritten to the
//                        harness's MAC; everything else is byte for byte what the wire carried.
//   tcp-input OUTDIR     fuzz_tcp_input seeds: every state x option set, each followed by a short program
//                        (in-window data, a read, a write, time passing, a FIN).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const HARNESS_MAC = Buffer.from([0x02, 0xca, 0xfe, 0x00, 0x01, 0x0a]); // fuzz_frame.c OUR_MAC
const CAPYBARA_IP = '10.77.1.10';

class CorpusToolError extends Error {
  readonly code = 'ERR_CORPUS_TOOL';
}

function readPcap(path: string): Buffer[] {
  const b = readFileSync(path);
  if (b.length < 24) throw new CorpusToolError(`${path}: not a pcap file`);
  const magic = b.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new CorpusToolError(`${path}: unsupported pcap magic ${magic.toString(16)}`);
  if (b.readUInt32LE(20) !== 1) throw new CorpusToolError(`${path}: link type is not Ethernet`);
  const frames: Buffer[] = [];
  for (let off = 24; off + 16 <= b.length;) {
    const incl = b.readUInt32LE(off + 8);
    const orig = b.readUInt32LE(off + 12);
    off += 16;
    if (off + incl > b.length) break;
    if (incl === orig) frames.push(Buffer.from(b.subarray(off, off + incl)));
    off += incl;
  }
  return frames;
}

const ip4 = (f: Buffer, at: number): string => `${f[at]}.${f[at + 1]}.${f[at + 2]}.${f[at + 3]}`;

function encodeSeed(frames: Buffer[], flags: number): Buffer {
  const parts: Buffer[] = [Buffer.of(flags)];
  for (const f of frames) {
    const h = Buffer.alloc(2);
    h.writeUInt16LE(f.length & 0x0fff); // gap nibble 0: 1 ms between frames
    parts.push(h, f);
  }
  return Buffer.concat(parts);
}

function frameCorpus(pcap: string, out: string): number {
  const frames = readPcap(pcap);
  // capybara's MAC: the source of any frame from its address (IPv4 or ARP reply)
  let mac: Buffer | null = null;
  for (const f of frames) {
    const et = f.readUInt16BE(12);
    if ((et === 0x0800 && ip4(f, 26) === CAPYBARA_IP) || (et === 0x0806 && f.length >= 42 && ip4(f, 28) === CAPYBARA_IP)) {
      mac = f.subarray(6, 12);
      break;
    }
  }
  if (!mac) throw new CorpusToolError('no frame from capybara in the capture');
  const groups = new Map<string, Buffer[]>();
  for (const f of frames) {
    if (f.subarray(6, 12).equals(mac)) continue; // ours, not input
    const bcast = f.subarray(0, 6).every((x) => x === 0xff);
    if (!bcast && !f.subarray(0, 6).equals(mac)) continue;
    const g = Buffer.from(f);
    if (!bcast) HARNESS_MAC.copy(g, 0);
    const et = g.readUInt16BE(12);
    let key = 'arp-icmp';
    if (et === 0x0800 && g[23] === 6) {
      const ihl = (g[14]! & 0x0f) * 4;
      key = `tcp-${g.readUInt16BE(14 + ihl)}`;
    }
    const list = groups.get(key) ?? [];
    if (list.length < 48) list.push(g);
    groups.set(key, list);
  }
  mkdirSync(out, { recursive: true });
  let n = 0;
  for (const [key, list] of groups) {
    writeFileSync(join(out, `${key}.bin`), encodeSeed(list, 0x03));
    n++;
  }
  return n;
}

function tcpInputCorpus(out: string): number {
  mkdirSync(out, { recursive: true });
  // program: data in window (10 bytes), read, write 128 bytes, 50 ms, peer FIN at RCV.NXT, 2 s
  const program = Buffer.from([
    0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 10,
    0x04, 0x01,
    0x05, 0x02,
    0x06, 0x05,
    0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0,
    0x06, 0x82,
  ]);
  let n = 0;
  for (let state = 0; state < 12; state++) {
    for (const opts of [0x07, 0x00, 0x0f]) {
      writeFileSync(join(out, `state${state}-opt${opts}.bin`), Buffer.concat([Buffer.of(state, opts, 0), program]));
      n++;
    }
  }
  return n;
}

function main(argv: string[]): number {
  const [mode, a, b] = argv;
  if (mode === 'frame' && a && b) console.log(`${frameCorpus(a, b)} frame seeds in ${b}`);
  else if (mode === 'tcp-input' && a) console.log(`${tcpInputCorpus(a)} tcp_input seeds in ${a}`);
  else {
    console.error('usage: corpus-tool frame PCAP OUTDIR | tcp-input OUTDIR');
    return 64;
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
