/**
 * Tinker's `TensorData` on the wire: `{data, dtype: "int64"|"float32", shape?, sparse_crow_indices?, sparse_col_indices?}`.
 *
 *   dense   `data` holds every element row-major; `shape` missing means 1-D of length data.length;
 *           otherwise the product of `shape` must equal data.length.
 *   sparse  CSR of a 2-D tensor: `shape` = [rows, cols] is required, `sparse_crow_indices` has rows+1
 *           non-decreasing offsets starting at 0 and ending at data.length, `sparse_col_indices[k]` is
 *           the column of the non-zero `data[k]` (in [0, cols)). Missing elements are 0.
 *
 * `decodeTensor` validates and densifies (int64 values must be integers) and names the field on any
 * problem; `encodeFloat32` builds the only shape the SDK accepts back (no extra keys).
 */
import { InvalidArgumentError } from '../core/errors.ts';

export type TensorDtype = 'int64' | 'float32';

export interface WireTensor {
  data: number[];
  dtype: TensorDtype;
  shape?: number[];
}

/** A dense tensor: row-major values and its shape (always given, ≥ 1 dimension). */
export interface DenseTensor {
  dtype: TensorDtype;
  shape: number[];
  data: Float64Array;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function intArray(raw: unknown, field: string, min = 0): number[] {
  if (!Array.isArray(raw)) throw new InvalidArgumentError(field, 'expected an array of integers');
  raw.forEach((v, i) => {
    if (!(typeof v === 'number' && Number.isInteger(v) && v >= min))
      throw new InvalidArgumentError(`${field}[${i}]`, `expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  });
  return raw as number[];
}

/** Validate one wire TensorData and return it dense. `field` names it in errors (e.g. `data[0].loss_fn_inputs.weights`). */
export function decodeTensor(raw: unknown, field: string): DenseTensor {
  if (!isObject(raw)) throw new InvalidArgumentError(field, 'expected a TensorData object {data, dtype, shape?}');
  const known = new Set(['data', 'dtype', 'shape', 'sparse_crow_indices', 'sparse_col_indices']);
  for (const k of Object.keys(raw)) if (!known.has(k)) throw new InvalidArgumentError(`${field}.${k}`, 'unknown TensorData field');
  const dtype = raw.dtype;
  if (dtype !== 'int64' && dtype !== 'float32')
    throw new InvalidArgumentError(`${field}.dtype`, `expected "int64" or "float32", got ${JSON.stringify(dtype)}`);
  if (!Array.isArray(raw.data)) throw new InvalidArgumentError(`${field}.data`, 'expected an array of numbers');
  const values = raw.data as unknown[];
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new InvalidArgumentError(`${field}.data[${i}]`, `expected a finite number, got ${JSON.stringify(v)}`);
    if (dtype === 'int64' && !Number.isInteger(v))
      throw new InvalidArgumentError(`${field}.data[${i}]`, `expected an integer (dtype int64), got ${v}`);
  });
  const nums = values as number[];
  const shape = raw.shape === undefined || raw.shape === null ? null : intArray(raw.shape, `${field}.shape`);
  const crowRaw = raw.sparse_crow_indices ?? null;
  const colRaw = raw.sparse_col_indices ?? null;
  if ((crowRaw === null) !== (colRaw === null)) {
    throw new InvalidArgumentError(
      `${field}.${crowRaw === null ? 'sparse_crow_indices' : 'sparse_col_indices'}`,
      'sparse tensors need both sparse_crow_indices and sparse_col_indices',
    );
  }
  if (crowRaw === null) {
    if (shape === null) return { dtype, shape: [nums.length], data: Float64Array.from(nums) };
    if (shape.length === 0) throw new InvalidArgumentError(`${field}.shape`, 'expected at least one dimension');
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== nums.length)
      throw new InvalidArgumentError(`${field}.shape`, `shape [${shape.join(', ')}] has ${n} elements but data has ${nums.length}`);
    return { dtype, shape: [...shape], data: Float64Array.from(nums) };
  }
  if (shape === null || shape.length !== 2)
    throw new InvalidArgumentError(`${field}.shape`, 'a sparse (CSR) tensor needs a 2-D shape [rows, cols]');
  const [rows, cols] = shape;
  const crow = intArray(crowRaw, `${field}.sparse_crow_indices`);
  const col = intArray(colRaw, `${field}.sparse_col_indices`);
  if (crow.length !== rows + 1)
    throw new InvalidArgumentError(`${field}.sparse_crow_indices`, `expected ${rows + 1} offsets (rows + 1), got ${crow.length}`);
  if (crow[0] !== 0 || crow[rows] !== nums.length)
    throw new InvalidArgumentError(`${field}.sparse_crow_indices`, `must start at 0 and end at ${nums.length} (the number of non-zeros)`);
  for (let r = 0; r < rows; r++) {
    if (crow[r + 1] < crow[r]) throw new InvalidArgumentError(`${field}.sparse_crow_indices[${r + 1}]`, 'offsets must not decrease');
  }
  if (col.length !== nums.length)
    throw new InvalidArgumentError(
      `${field}.sparse_col_indices`,
      `expected ${nums.length} column indices (one per non-zero), got ${col.length}`,
    );
  const dense = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = crow[r]; k < crow[r + 1]; k++) {
      if (col[k] >= cols) throw new InvalidArgumentError(`${field}.sparse_col_indices[${k}]`, `column ${col[k]} is outside [0, ${cols})`);
      dense[r * cols + col[k]] = nums[k];
    }
  }
  return { dtype, shape: [rows, cols], data: dense };
}

/** A float32 TensorData for a response (values rounded to float32, as the SDK will read them). */
export function encodeFloat32(values: ArrayLike<number>, shape: readonly number[]): WireTensor {
  return { data: Array.from(Float32Array.from(values)), dtype: 'float32', shape: [...shape] };
}
