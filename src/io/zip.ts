/**
 * A zip reader over a ByteSource, made for `torch.save` archives: it reads the central directory
 * (ZIP64 included), locates each entry's data through its local header, and reads small entries
 * whole. Large STORED entries are never copied: callers get their absolute byte range and read the
 * bytes in place. Every offset and size is checked against the file size before use, so a truncated
 * or corrupt file fails with a CORRUPT_FILE error naming it rather than with a short read.
 *
 * What torch 2.x writes (PyTorchStreamWriter over miniz, as read off torch 2.11 output): version 0,
 * flags 0x808 (data descriptor after the data + UTF-8 names), zero time/date, and zero CRC/sizes in
 * the local header (the real ones are in the descriptor and the central directory), an 'FB' extra
 * field of padding that aligns each entry's data to 64 bytes, a ZIP64 end-of-central-directory
 * record + locator before the classic end record even for small files, and ZIP64 extra fields once
 * sizes or offsets pass 4 GiB. So sizes come from the central directory only, and data starts are
 * computed from each local header's name and extra lengths.
 */
import { HubmoeError } from '../errors.js';
import type { ByteSource } from './safetensors.js';

export interface ZipEntry {
  name: string;
  /** 0 = STORED, 8 = DEFLATE, ... */
  compressionMethod: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  /** General-purpose flags of the central directory entry. */
  flags: number;
  crc32: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;

const EOCD_SIZE = 22;
const EOCD64_SIZE = 56;
const LOCATOR_SIZE = 20;
const CENTRAL_SIZE = 46;
const LOCAL_SIZE = 30;
const MAX_COMMENT = 0xffff;

/** The central directory is read into memory whole; no real archive comes near this. */
export const MAX_CENTRAL_DIRECTORY_BYTES = 512 * 1024 * 1024;

function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** A u64 as a number; values past 2^53 cannot be offsets in a real file and are reported as corrupt. */
function u64(b: Uint8Array, o: number, label: string, what: string): number {
  const lo = u32(b, o);
  const hi = u32(b, o + 4);
  const v = hi * 0x1_0000_0000 + lo;
  if (!Number.isSafeInteger(v)) throw corrupt(label, `${what} is ${v}, which no real file has`);
  return v;
}

function corrupt(label: string, what: string): HubmoeError {
  return new HubmoeError('CORRUPT_FILE', `${label}: not a valid zip archive: ${what}`);
}

function truncated(label: string, fileSize: number, what: string): HubmoeError {
  return new HubmoeError(
    'CORRUPT_FILE',
    `${label}: the file looks truncated (${what}; the file has ${fileSize} bytes); download or copy it again`,
  );
}

const utf8 = new TextDecoder('utf-8');

export class ZipArchive {
  private readonly byName = new Map<string, ZipEntry>();
  private readonly dataStarts = new Map<string, number>();

  private constructor(
    readonly source: ByteSource,
    readonly fileSize: number,
    readonly entries: readonly ZipEntry[],
    /** Where the central directory starts: every entry's data must end before it. */
    readonly centralDirectoryOffset: number,
  ) {
    for (const e of entries) {
      if (this.byName.has(e.name)) throw corrupt(source.label, `entry ${e.name} appears twice`);
      this.byName.set(e.name, e);
    }
  }

  get label(): string {
    return this.source.label;
  }

  /** Reads and validates the central directory. */
  static async open(source: ByteSource): Promise<ZipArchive> {
    const label = source.label;
    const fileSize = await source.size();
    if (fileSize < EOCD_SIZE) {
      throw fileSize === 0 ? corrupt(label, 'the file is empty') : truncated(label, fileSize, 'too short to hold a zip end record');
    }
    const tailLen = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT);
    const tailStart = fileSize - tailLen;
    const tail = await source.read(tailStart, tailLen);

    // The end record is the last signature whose comment length reaches exactly to the end of file.
    let eocd = -1;
    let cutEocd = false;
    for (let i = tail.length - 4; i >= 0; i--) {
      if (u32(tail, i) !== SIG_EOCD) continue;
      if (i + EOCD_SIZE > tail.length) {
        cutEocd = true;
        continue;
      }
      if (i + EOCD_SIZE + u16(tail, i + 20) === tail.length) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      const head = await source.read(0, Math.min(4, fileSize));
      const looksZip = head.length === 4 && u32(head, 0) === SIG_LOCAL;
      if (looksZip || cutEocd) {
        throw truncated(label, fileSize, 'the zip end-of-central-directory record is missing or cut short');
      }
      throw corrupt(label, 'no end-of-central-directory record found');
    }
    const eocdPos = tailStart + eocd;
    const disk = u16(tail, eocd + 4);
    const cdDisk = u16(tail, eocd + 6);
    let count = u16(tail, eocd + 10);
    let cdSize = u32(tail, eocd + 12);
    let cdOffset = u32(tail, eocd + 16);
    let cdLimit = eocdPos; // the central directory must end before this

    // ZIP64: a locator just before the end record points at the zip64 end record. torch writes it
    // always; other writers only when a field overflows (then the classic fields hold 0xFFFF...).
    const overflow = count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff || disk === 0xffff || cdDisk === 0xffff;
    const locPos = eocdPos - LOCATOR_SIZE;
    let loc: Uint8Array | undefined;
    if (locPos >= 0) {
      loc = locPos >= tailStart ? tail.subarray(locPos - tailStart, locPos - tailStart + LOCATOR_SIZE) : await source.read(locPos, LOCATOR_SIZE);
      if (u32(loc, 0) !== SIG_EOCD64_LOCATOR) loc = undefined;
    }
    if (loc) {
      const rec64Pos = u64(loc, 8, label, 'the zip64 end record offset');
      if (u32(loc, 16) > 1) throw new HubmoeError('UNSUPPORTED', `${label}: multi-disk (split) zip archives are not supported`);
      if (rec64Pos + EOCD64_SIZE > locPos) throw corrupt(label, `the zip64 end record offset ${rec64Pos} is out of place`);
      const rec = await source.read(rec64Pos, EOCD64_SIZE);
      if (u32(rec, 0) !== SIG_EOCD64) throw corrupt(label, `no zip64 end record at offset ${rec64Pos}`);
      if (u32(rec, 16) !== 0 || u32(rec, 20) !== 0) {
        throw new HubmoeError('UNSUPPORTED', `${label}: multi-disk (split) zip archives are not supported`);
      }
      count = u64(rec, 32, label, 'the zip64 entry count');
      cdSize = u64(rec, 40, label, 'the zip64 central directory size');
      cdOffset = u64(rec, 48, label, 'the zip64 central directory offset');
      cdLimit = rec64Pos;
    } else if (overflow) {
      throw truncated(label, fileSize, 'the zip64 end record that the end record calls for is missing');
    } else if (disk !== 0 || cdDisk !== 0) {
      throw new HubmoeError('UNSUPPORTED', `${label}: multi-disk (split) zip archives are not supported`);
    }
    if (cdOffset + cdSize > cdLimit) {
      throw truncated(label, fileSize, `the central directory (offset ${cdOffset}, ${cdSize} bytes) runs past where the end records start`);
    }
    if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES) throw corrupt(label, `central directory of ${cdSize} bytes`);
    if (count * CENTRAL_SIZE > cdSize) throw corrupt(label, `${count} entries cannot fit a ${cdSize}-byte central directory`);

    const cd = await source.read(cdOffset, cdSize);
    const entries: ZipEntry[] = [];
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + CENTRAL_SIZE > cd.length || u32(cd, p) !== SIG_CENTRAL) {
        throw corrupt(label, `central directory entry ${i} at offset ${cdOffset + p} is damaged`);
      }
      const flags = u16(cd, p + 8);
      const method = u16(cd, p + 10);
      const crc32 = u32(cd, p + 16);
      let csize = u32(cd, p + 20);
      let usize = u32(cd, p + 24);
      const nameLen = u16(cd, p + 28);
      const extraLen = u16(cd, p + 30);
      const commentLen = u16(cd, p + 32);
      let diskStart = u16(cd, p + 34);
      let offset = u32(cd, p + 42);
      const end = p + CENTRAL_SIZE + nameLen + extraLen + commentLen;
      if (end > cd.length) throw corrupt(label, `central directory entry ${i} runs past the directory`);
      const name = utf8.decode(cd.subarray(p + CENTRAL_SIZE, p + CENTRAL_SIZE + nameLen));
      // ZIP64 extended information: the 64-bit values of exactly those fields that hold 0xFFFF...
      let x = p + CENTRAL_SIZE + nameLen;
      const xEnd = x + extraLen;
      while (x + 4 <= xEnd) {
        const id = u16(cd, x);
        const len = u16(cd, x + 2);
        if (x + 4 + len > xEnd) throw corrupt(label, `entry ${name} has a damaged extra field`);
        if (id === 0x0001) {
          let q = x + 4;
          const take = (what: string): number => {
            if (q + 8 > x + 4 + len) throw corrupt(label, `entry ${name}'s zip64 extra field lacks the ${what}`);
            const v = u64(cd, q, label, `entry ${name}'s ${what}`);
            q += 8;
            return v;
          };
          if (usize === 0xffffffff) usize = take('uncompressed size');
          if (csize === 0xffffffff) csize = take('compressed size');
          if (offset === 0xffffffff) offset = take('local header offset');
          if (diskStart === 0xffff) {
            if (q + 4 > x + 4 + len) throw corrupt(label, `entry ${name}'s zip64 extra field lacks the disk number`);
            diskStart = u32(cd, q);
          }
        }
        x += 4 + len;
      }
      if (usize === 0xffffffff || csize === 0xffffffff || offset === 0xffffffff) {
        throw corrupt(label, `entry ${name} needs a zip64 extra field and has none`);
      }
      if (diskStart !== 0) throw new HubmoeError('UNSUPPORTED', `${label}: multi-disk (split) zip archives are not supported`);
      if (offset + LOCAL_SIZE + nameLen + csize > cdOffset) {
        throw truncated(label, fileSize, `entry ${name} (local header at ${offset}, ${csize} bytes) runs into the central directory`);
      }
      entries.push({ name, compressionMethod: method, compressedSize: csize, uncompressedSize: usize, localHeaderOffset: offset, flags, crc32 });
      p = end;
    }
    return new ZipArchive(source, fileSize, entries, cdOffset);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  entry(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /**
   * Where the entry's bytes start in the file: after its local header, whose name and extra field
   * lengths may differ from the central directory's (torch's alignment padding is local-only).
   */
  async dataStart(e: ZipEntry): Promise<number> {
    const known = this.dataStarts.get(e.name);
    if (known !== undefined) return known;
    const label = this.label;
    const nameBytes = new TextEncoder().encode(e.name);
    const hdr = await this.source.read(e.localHeaderOffset, LOCAL_SIZE + nameBytes.length);
    if (u32(hdr, 0) !== SIG_LOCAL) throw corrupt(label, `no local header for ${e.name} at offset ${e.localHeaderOffset}`);
    const nameLen = u16(hdr, 26);
    const extraLen = u16(hdr, 28);
    if (nameLen !== nameBytes.length || !nameBytes.every((b, i) => hdr[LOCAL_SIZE + i] === b)) {
      throw corrupt(label, `the local header at offset ${e.localHeaderOffset} does not name ${e.name}`);
    }
    const start = e.localHeaderOffset + LOCAL_SIZE + nameLen + extraLen;
    if (start + e.compressedSize > this.centralDirectoryOffset) {
      throw truncated(label, this.fileSize, `entry ${e.name}'s data (${e.compressedSize} bytes at ${start}) runs into the central directory`);
    }
    this.dataStarts.set(e.name, start);
    return start;
  }

  /** The absolute byte range of a STORED entry's data, to be read in place. */
  async storedRange(e: ZipEntry): Promise<{ begin: number; end: number }> {
    this.requireStored(e);
    const begin = await this.dataStart(e);
    return { begin, end: begin + e.compressedSize };
  }

  /** Reads a small STORED entry whole (data.pkl, byteorder, version). */
  async read(e: ZipEntry, maxBytes: number): Promise<Uint8Array> {
    this.requireStored(e);
    if (e.uncompressedSize > maxBytes) {
      throw new HubmoeError('UNSUPPORTED', `${this.label}: entry ${e.name} has ${e.uncompressedSize} bytes, more than the ${maxBytes} hubmoe reads`);
    }
    const { begin, end } = await this.storedRange(e);
    return this.source.read(begin, end - begin);
  }

  private requireStored(e: ZipEntry): void {
    if (e.flags & 0x1) throw new HubmoeError('UNSUPPORTED', `${this.label}: entry ${e.name} is encrypted`);
    if (e.compressionMethod !== 0) {
      throw new HubmoeError(
        'UNSUPPORTED',
        `${this.label}: entry ${e.name} is compressed (zip method ${e.compressionMethod}); torch.save stores entries uncompressed, ` +
          'so this archive was repacked by another tool: re-save it with torch.save or convert it to safetensors',
      );
    }
    if (e.compressedSize !== e.uncompressedSize) {
      throw corrupt(this.label, `stored entry ${e.name} has compressed size ${e.compressedSize} but size ${e.uncompressedSize}`);
    }
  }

  /** Reads the local headers of many entries, a few at a time, so later dataStart() calls are free. */
  async resolveDataStarts(entries: readonly ZipEntry[], concurrency = 16): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < entries.length) {
        const e = entries[next++]!;
        await this.dataStart(e);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, entries.length) }, worker));
  }
}
