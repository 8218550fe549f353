/**
 * The safetensors file format (as written by Hugging Face `safetensors`): an 8-byte little-endian
 * header length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
 * {string: string}}` (padded with spaces to a multiple of 8), then the raw little-endian tensor data;
 * offsets are relative to the start of the data section. Also the sharded form: a
 * `model.safetensors.index.json` whose `weight_map` maps each tensor name to its shard file.
 *
 * Reads are streaming: the header is parsed on its own and each tensor is read straight from the file
 * into the caller's Float32Array (F32 lands in place, BF16/F16 go through a bounded chunk buffer and
 * are widened to f32), so a multi-GB checkpoint never exists as one Buffer. Writes convert f32 to the
 * requested dtype with round-to-nearest-even and go to a temporary file that is renamed into place.
 *
 * Every malformed input is a one-line FileFormatError naming the file and the tensor or field.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, renameSync, writeSync, unlinkSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename } from 'node:path';
import { FileFormatError } from '../core/errors.ts';

export type SafetensorsDtype = 'F32' | 'BF16' | 'F16';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, BF16: 2, F16: 2 };

/** Largest header we accept (the reference implementation refuses headers over 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;
/** Chunk size for dtype conversion and for splitting large reads and writes. */
const CHUNK_BYTES = 1 << 24;

if (endianness() !== 'LE') throw new Error('safetensors I/O assumes a little-endian machine');

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte range in the file (header included), [begin, end). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  file: string;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** Read and validate the header of a .safetensors file (not the data). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openOrFail(file);
  try {
    return parseHeader(fd, file);
  } finally {
    closeSync(fd);
  }
}

function openOrFail(file: string): number {
  try {
    return openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FileFormatError({ file, message: code === 'ENOENT' ? 'file not found' : `cannot open (${code ?? String(err)})`, cause: err });
  }
}

function readExactly(fd: number, buf: Uint8Array, position: number, file: string, what: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, Math.min(buf.length - done, 1 << 30), position + done);
    if (n === 0) throw new FileFormatError({ file, message: `truncated: unexpected end of file while reading ${what}` });
    done += n;
  }
}

function parseHeader(fd: number, file: string): SafetensorsHeader {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) throw new FileFormatError({ file, message: `truncated: ${fileSize} bytes, too short for a safetensors header` });
  const lenBuf = new Uint8Array(8);
  readExactly(fd, lenBuf, 0, file, 'the header length');
  const n = Number(new DataView(lenBuf.buffer).getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES)
    throw new FileFormatError({ file, message: `corrupt header: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit` });
  if (8 + n > fileSize)
    throw new FileFormatError({ file, message: `truncated: header length ${n} runs past the end of the ${fileSize}-byte file` });
  const headerBytes = new Uint8Array(n);
  readExactly(fd, headerBytes, 8, file, 'the header');
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new FileFormatError({
      file,
      message: `corrupt header: not valid UTF-8 JSON (${(err as Error).message.split('\n')[0]})`,
      cause: err,
    });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new FileFormatError({ file, message: 'corrupt header: expected a JSON object' });
  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw new FileFormatError({ file, field: '__metadata__', message: 'expected an object of strings' });
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const fail = (message: string): never => {
      throw new FileFormatError({ file, field: name, message });
    };
    if (typeof raw !== 'object' || raw === null) fail('expected {dtype, shape, data_offsets}');
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string') fail('missing dtype');
    if (!((dtype as string) in DTYPE_BYTES)) fail(`unsupported dtype "${String(dtype)}"; supported: F32, BF16, F16`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) fail(`bad shape ${JSON.stringify(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(`bad data_offsets ${JSON.stringify(offsets)}`);
    }
    const [b, e] = offsets as number[];
    const numel = (shape as number[]).reduce((x, y) => x * y, 1);
    const bytes = numel * DTYPE_BYTES[dtype as SafetensorsDtype];
    if (e < b || e > dataSize) fail(`data_offsets [${b}, ${e}] out of range (data section is ${dataSize} bytes)`);
    if (e - b !== bytes)
      fail(`data_offsets [${b}, ${e}] span ${e - b} bytes but shape ${JSON.stringify(shape)} in ${String(dtype)} needs ${bytes}`);
    tensors.set(name, { name, dtype: dtype as SafetensorsDtype, shape: shape as number[], begin: dataStart + b, end: dataStart + e });
  }
  return { file, tensors, metadata };
}

/**
 * Read tensors of one file. `target(entry)` returns the Float32Array to fill (its length must equal the
 * tensor's element count) or null to skip the tensor. The file is read tensor by tensor.
 */
export function readSafetensors(file: string, target: (entry: TensorEntry) => Float32Array | null): SafetensorsHeader {
  const fd = openOrFail(file);
  try {
    const header = parseHeader(fd, file);
    const chunk = new Uint8Array(CHUNK_BYTES);
    for (const entry of header.tensors.values()) {
      const dst = target(entry);
      if (dst === null) continue;
      const numel = entry.shape.reduce((x, y) => x * y, 1);
      if (dst.length !== numel)
        throw new FileFormatError({ file, field: entry.name, message: `has ${numel} elements, expected ${dst.length}` });
      readTensorData(fd, file, entry, dst, chunk);
    }
    return header;
  } finally {
    closeSync(fd);
  }
}

function readTensorData(fd: number, file: string, entry: TensorEntry, dst: Float32Array, chunk: Uint8Array): void {
  const what = `tensor "${entry.name}"`;
  if (entry.dtype === 'F32') {
    readExactly(fd, new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength), entry.begin, file, what);
    return;
  }
  // 2-byte dtypes: convert chunk by chunk (chunk length is even, so elements never straddle chunks).
  const dst32 = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  let pos = entry.begin;
  let out = 0;
  while (pos < entry.end) {
    const len = Math.min(chunk.length, entry.end - pos);
    const view = chunk.subarray(0, len);
    readExactly(fd, view, pos, file, what);
    const half = new Uint16Array(chunk.buffer, 0, len >> 1);
    if (entry.dtype === 'BF16') for (let i = 0; i < half.length; i++) dst32[out + i] = half[i] << 16;
    else for (let i = 0; i < half.length; i++) dst32[out + i] = f16BitsToF32Bits(half[i]);
    out += half.length;
    pos += len;
  }
}

/** Widen IEEE half-precision bits to single-precision bits (exact; subnormals, inf and NaN kept). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp === 0) {
    if (mant === 0) return sign >>> 0;
    // Subnormal: normalise.
    let e = -1;
    do {
      mant <<= 1;
      e++;
    } while ((mant & 0x400) === 0);
    return (sign | ((127 - 15 - e) << 23) | ((mant & 0x3ff) << 13)) >>> 0;
  }
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
}

/** Narrow single-precision bits to bfloat16 bits, round to nearest, ties to even; NaN stays NaN. */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return ((bits >>> 16) | 0x40) & 0xffff;
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) / 65536) & 0xffff; // bits + rounding may exceed 2^32 only for NaN (handled above)
}

/** Narrow single-precision bits to IEEE half bits, round to nearest, ties to even; overflow → ±inf. */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal
    const full = mant | 0x800000;
    const shift = 14 - e;
    let r = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1) === 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++; // a carry rolls into the exponent (up to inf)
  return sign | r;
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/**
 * Write tensors (f32 in memory) as a safetensors file in `dtype`, tensors in the given order, laid out
 * contiguously. Written to `<file>.tmp-<pid>` and renamed, so readers never see a partial file.
 */
export function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  options: { dtype?: SafetensorsDtype; metadata?: Record<string, string> } = {},
): void {
  const dtype = options.dtype ?? 'F32';
  const bytesPer = DTYPE_BYTES[dtype];
  const header: Record<string, unknown> = {};
  if (options.metadata && Object.keys(options.metadata).length > 0) header.__metadata__ = options.metadata;
  let offset = 0;
  for (const t of tensors) {
    const numel = t.shape.reduce((x, y) => x * y, 1);
    if (numel !== t.data.length)
      throw new FileFormatError({
        file,
        field: t.name,
        message: `shape ${JSON.stringify(t.shape)} needs ${numel} elements, data has ${t.data.length}`,
      });
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + numel * bytesPer] };
    offset += numel * bytesPer;
  }
  let json = JSON.stringify(header);
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (jsonBytes % 8)) % 8);
  const headerBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));

  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeAll(fd, lenBuf);
    writeAll(fd, headerBuf);
    const chunk = new Uint16Array(CHUNK_BYTES >> 1);
    for (const t of tensors) {
      if (dtype === 'F32') {
        writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
        continue;
      }
      const src = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
      const narrow = dtype === 'BF16' ? f32BitsToBf16Bits : f32BitsToF16Bits;
      for (let start = 0; start < src.length; start += chunk.length) {
        const n = Math.min(chunk.length, src.length - start);
        for (let i = 0; i < n; i++) chunk[i] = narrow(src[start + i]);
        writeAll(fd, new Uint8Array(chunk.buffer, 0, n * 2));
      }
    }
    closeSync(fd);
  } catch (err) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    throw err;
  }
  renameSync(tmp, file);
}

function writeAll(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, Math.min(buf.length - done, 1 << 30));
}

/** The tensor → shard-file map of a sharded checkpoint (`model.safetensors.index.json`). */
export function readShardIndex(indexFile: string): Map<string, string> {
  if (!existsSync(indexFile)) throw new FileFormatError({ file: indexFile, message: 'file not found' });
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexFile, 'utf8'));
  } catch (err) {
    throw new FileFormatError({ file: indexFile, message: `not valid JSON (${(err as Error).message.split('\n')[0]})`, cause: err });
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map))
    throw new FileFormatError({ file: indexFile, field: 'weight_map', message: 'missing or not an object' });
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string' || shard === '' || basename(shard) !== shard) {
      throw new FileFormatError({
        file: indexFile,
        field: `weight_map.${name}`,
        message: `expected a shard file name in the same directory, got ${JSON.stringify(shard)}`,
      });
    }
    out.set(name, shard);
  }
  return out;
}
