import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  f16BitsToF32Bits,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from './safetensors.ts';
import { Rng } from '../util/rng.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'matpo-st-'));
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number) => {
  f32[0] = x;
  return u32[0];
};
const fromBits = (b: number) => {
  u32[0] = b >>> 0;
  return f32[0];
};
const bf16Value = (h: number) => fromBits(h << 16);
const f16Value = (h: number) => fromBits(f16BitsToF32Bits(h));

/** A hand-built file following the format description, independent of writeSafetensors. */
function handWritten(file: string, header: object, data: Uint8Array, pad = true): void {
  let json = JSON.stringify(header);
  if (pad) json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, Buffer.from(json), data]));
}

test('safetensors: reads a hand-written F32/BF16/F16 file', () => {
  const dir = tmp();
  const file = join(dir, 'a.safetensors');
  const data = Buffer.alloc(8 + 4 + 4);
  data.writeFloatLE(1.5, 0);
  data.writeFloatLE(-2.25, 4); // F32 [2]
  data.writeUInt16LE(0x3fc0, 8);
  data.writeUInt16LE(0xc010, 10); // BF16 1.5, -2.25
  data.writeUInt16LE(0x3e00, 12);
  data.writeUInt16LE(0x0001, 14); // F16 1.5, 2^-24 (smallest subnormal)
  handWritten(
    file,
    {
      __metadata__: { format: 'pt' },
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'BF16', shape: [1, 2], data_offsets: [8, 12] },
      c: { dtype: 'F16', shape: [2], data_offsets: [12, 16] },
    },
    data,
  );
  const got: Record<string, Float32Array> = {};
  const h = readSafetensors(file, (e) => (got[e.name] = new Float32Array(e.shape.reduce((x, y) => x * y, 1))));
  assert.deepEqual(h.metadata, { format: 'pt' });
  assert.deepEqual([...got.a], [1.5, -2.25]);
  assert.deepEqual([...got.b], [1.5, -2.25]);
  assert.deepEqual([...got.c], [1.5, 2 ** -24]);
});

test('safetensors: f16 widening is exact for every half value', () => {
  for (let h = 0; h < 0x10000; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    const want = e === 0x1f ? (m ? NaN : s * Infinity) : e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
    const got = f16Value(h);
    if (Number.isNaN(want)) assert.ok(Number.isNaN(got), `h=${h}`);
    else assert.equal(Object.is(got, want) || got === want, true, `h=${h.toString(16)}: ${got} vs ${want}`);
  }
});

test('safetensors: bf16 and f16 narrowing round to nearest, ties to even', () => {
  const rng = new Rng(1);
  const check = (x: number, h: number, value: (h: number) => number, kind: string) => {
    const v = value(h);
    const up = value(h + 1),
      down = value(h - 1);
    // No neighbour is closer (neighbours within the same sign/binade run; inf handled by finite check).
    for (const n of [up, down]) {
      if (!Number.isFinite(n) || Math.sign(n) !== Math.sign(v)) continue;
      const dv = Math.abs(x - v),
        dn = Math.abs(x - n);
      assert.ok(dv < dn || (dv === dn && (h & 1) === 0), `${kind} ${x} → ${v} but ${n} is at least as close`);
    }
  };
  for (let i = 0; i < 20000; i++) {
    const x = Math.fround((rng.next() - 0.5) * 2 ** (rng.int(40) - 20));
    const hb = f32BitsToBf16Bits(bitsOf(x));
    check(x, hb, bf16Value, 'bf16');
    const hf = f32BitsToF16Bits(bitsOf(x));
    if (Math.abs(x) < 65504) check(x, hf, f16Value, 'f16');
  }
  // Exact ties: 1 + 2^-8 is halfway between bf16 1 and 1+2^-7 → even (1); 1 + 3·2^-8 → 1 + 2^-6.
  assert.equal(bf16Value(f32BitsToBf16Bits(bitsOf(1 + 2 ** -8))), 1);
  assert.equal(bf16Value(f32BitsToBf16Bits(bitsOf(1 + 3 * 2 ** -8))), 1 + 2 ** -6);
  assert.equal(f16Value(f32BitsToF16Bits(bitsOf(1 + 2 ** -11))), 1);
  assert.equal(f16Value(f32BitsToF16Bits(bitsOf(1 + 3 * 2 ** -11))), 1 + 2 ** -9);
  assert.equal(f16Value(f32BitsToF16Bits(bitsOf(3 * 2 ** -26))), 2 ** -24); // subnormal rounding up
  assert.equal(f16Value(f32BitsToF16Bits(bitsOf(2 ** -25))), 0); // tie to even (zero)
  assert.equal(f16Value(f32BitsToF16Bits(bitsOf(70000))), Infinity);
  assert.equal(bf16Value(f32BitsToBf16Bits(bitsOf(3.39e38))), 3.3895313892515355e38);
  assert.equal(bf16Value(f32BitsToBf16Bits(bitsOf(3.4e38))), Infinity); // past the halfway point to 2^128
  assert.ok(Number.isNaN(bf16Value(f32BitsToBf16Bits(0x7f800001))));
  assert.ok(Number.isNaN(f16Value(f32BitsToF16Bits(0x7f800001))));
});

test('safetensors: write/read round trip in f32 (exact) and bf16/f16 (rounded once, then stable)', () => {
  const dir = tmp();
  const rng = new Rng(2);
  const a = new Float32Array(1000).map(() => rng.normal());
  const b = new Float32Array(6).map(() => rng.normal() * 1e-3);
  for (const dtype of ['F32', 'BF16', 'F16'] as const) {
    const file = join(dir, `${dtype}.safetensors`);
    writeSafetensors(
      file,
      [
        { name: 'a', shape: [10, 100], data: a },
        { name: 'b', shape: [2, 3], data: b },
      ],
      { dtype, metadata: { k: 'v' } },
    );
    const raw = readFileSync(file);
    const n = Number(raw.readBigUInt64LE(0));
    assert.equal(n % 8, 0, 'header padded to 8 bytes');
    const header = JSON.parse(raw.subarray(8, 8 + n).toString());
    assert.deepEqual(header.a, { dtype, shape: [10, 100], data_offsets: [0, 1000 * (dtype === 'F32' ? 4 : 2)] });
    const ra = new Float32Array(1000),
      rb = new Float32Array(6);
    readSafetensors(file, (e) => (e.name === 'a' ? ra : rb));
    if (dtype === 'F32') {
      assert.deepEqual(ra, a);
      assert.deepEqual(rb, b);
    } else {
      const rel = dtype === 'BF16' ? 2 ** -8 : 2 ** -11;
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(ra[i] - a[i]) <= rel * Math.abs(a[i]) + 1e-7);
      const file2 = join(dir, `${dtype}-2.safetensors`);
      writeSafetensors(file2, [{ name: 'a', shape: [10, 100], data: ra }], { dtype });
      const ra2 = new Float32Array(1000);
      readSafetensors(file2, () => ra2);
      assert.deepEqual(ra2, ra, 'a second round trip changes nothing');
    }
  }
});

test('safetensors: bad files give one-line errors naming file and tensor', () => {
  const dir = tmp();
  const f = (name: string) => join(dir, name);
  assert.throws(() => readSafetensorsHeader(f('missing.safetensors')), /missing\.safetensors: file not found/);
  writeFileSync(f('short.safetensors'), Buffer.from([1, 2, 3]));
  assert.throws(() => readSafetensorsHeader(f('short.safetensors')), /short\.safetensors: truncated/);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(1000n);
  writeFileSync(f('trunc.safetensors'), Buffer.concat([len, Buffer.from('{"a":')]));
  assert.throws(() => readSafetensorsHeader(f('trunc.safetensors')), /trunc\.safetensors: truncated: header length 1000/);
  handWritten(f('json.safetensors'), {}, new Uint8Array(0));
  const bad = readFileSync(f('json.safetensors'));
  bad[8] = 0x5b;
  writeFileSync(f('json.safetensors'), bad);
  assert.throws(() => readSafetensorsHeader(f('json.safetensors')), /json\.safetensors: corrupt header/);
  handWritten(f('dtype.safetensors'), { w: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8));
  assert.throws(() => readSafetensorsHeader(f('dtype.safetensors')), /dtype\.safetensors: field "w": unsupported dtype "I64"/);
  handWritten(f('range.safetensors'), { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8));
  assert.throws(() => readSafetensorsHeader(f('range.safetensors')), /range\.safetensors: field "w": data_offsets \[0, 16\] out of range/);
  handWritten(f('size.safetensors'), { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8));
  assert.throws(() => readSafetensorsHeader(f('size.safetensors')), /field "w": data_offsets \[0, 8\] span 8 bytes but shape \[3\]/);
  handWritten(f('ok.safetensors'), { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
  assert.throws(
    () => readSafetensors(f('ok.safetensors'), () => new Float32Array(3)),
    /ok\.safetensors: field "w": has 2 elements, expected 3/,
  );
  for (const name of ['missing', 'short', 'trunc', 'json', 'dtype', 'range', 'size']) {
    try {
      readSafetensorsHeader(f(`${name}.safetensors`));
    } catch (err) {
      assert.ok(!(err as Error).message.includes('\n'), name);
    }
  }
});
