// TensorData decoding (dense, CSR sparse, and the errors that name the field) and the mapping of
// Tinker datums onto engine sequences: next-token targets need one sequence of N + 1 tokens, other
// targets get exact probe sequences, and past the probe budget the request is refused naming
// target_tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MatpoError } from '../core/errors.ts';
import { gatherLogprobs, parseDatums, planSequences, scatterGradients } from './datums.ts';
import { decodeTensor, encodeFloat32 } from './tensor-data.ts';

const fails = (fn: () => unknown, message: string) =>
  assert.throws(fn, (e: unknown) => e instanceof MatpoError && e.message === message, `expected: ${message}`);

test('TensorData: dense with and without shape, CSR densified, float32 encoding has only data/dtype/shape', () => {
  assert.deepEqual(decodeTensor({ data: [1, 2, 3], dtype: 'int64' }, 'x'), {
    dtype: 'int64',
    shape: [3],
    data: Float64Array.from([1, 2, 3]),
  });
  assert.deepEqual(decodeTensor({ data: [1, 2, 3, 4, 5, 6], dtype: 'float32', shape: [2, 3] }, 'x').shape, [2, 3]);
  // [[0, 7, 0], [0, 0, 0], [5, 0, 9]]
  const csr = decodeTensor(
    { data: [7, 5, 9], dtype: 'float32', shape: [3, 3], sparse_crow_indices: [0, 1, 1, 3], sparse_col_indices: [1, 0, 2] },
    'x',
  );
  assert.deepEqual(Array.from(csr.data), [0, 7, 0, 0, 0, 0, 5, 0, 9]);
  assert.deepEqual(encodeFloat32([0.1, 2], [2]), { data: [Math.fround(0.1), 2], dtype: 'float32', shape: [2] });
});

test('TensorData: bad dtype, shape, values and CSR indices are one-line errors naming the field', () => {
  fails(() => decodeTensor({ data: [1], dtype: 'float64' }, 'w'), 'w.dtype: expected "int64" or "float32", got "float64"');
  fails(
    () => decodeTensor({ data: [1, 2, 3], dtype: 'float32', shape: [2, 2] }, 'w'),
    'w.shape: shape [2, 2] has 4 elements but data has 3',
  );
  fails(() => decodeTensor({ data: [1.5], dtype: 'int64' }, 't'), 't.data[0]: expected an integer (dtype int64), got 1.5');
  fails(() => decodeTensor({ data: [1, 'a'], dtype: 'float32' }, 'w'), 'w.data[1]: expected a finite number, got "a"');
  fails(() => decodeTensor({ data: [1], dtype: 'float32', extra: 1 }, 'w'), 'w.extra: unknown TensorData field');
  fails(
    () => decodeTensor({ data: [1], dtype: 'float32', shape: [1, 2], sparse_crow_indices: [0, 1] }, 'w'),
    'w.sparse_col_indices: sparse tensors need both sparse_crow_indices and sparse_col_indices',
  );
  fails(
    () => decodeTensor({ data: [1], dtype: 'float32', shape: [2, 2], sparse_crow_indices: [0, 1], sparse_col_indices: [0] }, 'w'),
    'w.sparse_crow_indices: expected 3 offsets (rows + 1), got 2',
  );
  fails(
    () => decodeTensor({ data: [1], dtype: 'float32', shape: [1, 2], sparse_crow_indices: [0, 1], sparse_col_indices: [2] }, 'w'),
    'w.sparse_col_indices[0]: column 2 is outside [0, 2)',
  );
  fails(
    () => decodeTensor({ data: [1, 2], dtype: 'float32', shape: [2, 2], sparse_crow_indices: [0, 2, 1], sparse_col_indices: [0, 1] }, 'w'),
    'w.sparse_crow_indices: must start at 0 and end at 2 (the number of non-zeros)',
  );
});

const datum = (input: number[], inputs: Record<string, unknown>) => ({
  model_input: { chunks: [{ type: 'encoded_text', tokens: input }] },
  loss_fn_inputs: inputs,
});
const ints = (data: number[]) => ({ data, dtype: 'int64' });
const floats = (data: number[]) => ({ data, dtype: 'float32' });

test('datums: next-token targets map onto one sequence of N + 1 tokens, ℓ_t at position t + 1', () => {
  const ds = parseDatums([datum([11, 12, 13], { target_tokens: ints([12, 13, 14]), weights: floats([0, 1, 1]) })], 'cross_entropy', 100);
  const plan = planSequences(ds, 0);
  assert.deepEqual(plan.sequences, [[11, 12, 13, 14]]);
  assert.equal(plan.probeTokens, 0);
  const lp = gatherLogprobs(plan, [Float32Array.from([0, -1, -2, -3])]);
  assert.deepEqual(Array.from(lp[0]), [-1, -2, -3]);
  assert.deepEqual(
    scatterGradients(plan, [Float64Array.from([5, 6, 7])]).map((g) => Array.from(g)),
    [[0, 5, 6, 7]],
  );
});

test('datums: a target that is not the next input token gets an exact probe x[0..t] ++ [target]; [N, K] targets too', () => {
  const ds = parseDatums([datum([11, 12, 13], { target_tokens: ints([12, 40, 14]) })], 'cross_entropy', 100);
  const plan = planSequences(ds, 100);
  assert.deepEqual(plan.sequences, [
    [11, 12, 13, 14],
    [11, 12, 40],
  ]);
  assert.equal(plan.probeTokens, 3);
  const lp = gatherLogprobs(plan, [Float32Array.from([0, -1, -2, -3]), Float32Array.from([0, -9, -5])]);
  assert.deepEqual(Array.from(lp[0]), [-1, -5, -3]);
  const topk = parseDatums(
    [
      datum([11, 12], {
        target_tokens: { data: [12, 30, 50, 30], dtype: 'int64', shape: [2, 2] },
        weights: { data: [1, 0.5, 1, 0.5], dtype: 'float32', shape: [2, 2] },
      }),
    ],
    'cross_entropy',
    100,
  );
  const p2 = planSequences(topk, 100);
  assert.deepEqual(p2.sequences, [
    [11, 12, 50],
    [11, 30],
    [11, 12, 30],
  ]);
  assert.deepEqual(Array.from(p2.sources[0]), [0, 1, 1, 1, 0, 2, 2, 2]);
  fails(
    () => planSequences(ds, 2),
    'data[0].loss_fn_inputs.target_tokens: targets that are not the next input token need 3+ extra tokens of forward (limit 2); ' +
      'align them as model_input = seq[:-1], target_tokens = seq[1:]',
  );
});

test('datums: inputs are checked against the loss and the model input, naming the field', () => {
  const ok = { target_tokens: ints([2, 3]), logprobs: floats([-1, -1]), advantages: floats([1, 1]) };
  assert.equal(parseDatums([datum([1, 2], ok)], 'ppo', 10).length, 1);
  fails(
    () => parseDatums([datum([1, 2], { target_tokens: ints([2, 3]) })], 'ppo', 10),
    'data[0].loss_fn_inputs.logprobs: is required by ppo',
  );
  fails(
    () => parseDatums([datum([1, 2], { ...ok, mask: floats([1, 1]) })], 'ppo', 10),
    'data[0].loss_fn_inputs.mask: not an input of ppo (it takes target_tokens, logprobs, advantages, weights)',
  );
  fails(
    () => parseDatums([datum([1, 2], { ...ok, advantages: floats([1, 1, 1]) })], 'ppo', 10),
    'data[0].loss_fn_inputs.advantages: first dimension 3 must equal the model input length 2',
  );
  fails(
    () => parseDatums([datum([1, 2], { target_tokens: ints([2, 30]) })], 'cross_entropy', 10),
    'data[0].loss_fn_inputs.target_tokens.data[1]: token id 30 is outside the vocabulary [0, 10)',
  );
  fails(
    () => parseDatums([datum([1, 12], { target_tokens: ints([2, 3]) })], 'cross_entropy', 10),
    'data[0].model_input.chunks[0].tokens[1]: token id 12 is outside the vocabulary [0, 10)',
  );
  fails(
    () =>
      parseDatums([{ model_input: { chunks: [{ type: 'image', data: 'AA==', format: 'png' }] }, loss_fn_inputs: {} }], 'cross_entropy', 10),
    'data[0].model_input.chunks[0].type: "image" chunks are not supported by this server (text models only)',
  );
  fails(() => parseDatums([], 'cross_entropy', 10), 'data: expected a non-empty array of datums');
  fails(
    () =>
      parseDatums(
        [
          datum([1, 2], {
            target_tokens: { data: [2, 3, 4, 5], dtype: 'int64', shape: [2, 2] },
            logprobs: { data: [0, 0, 0, 0], dtype: 'float32', shape: [2, 2] },
            advantages: { data: [0, 0, 0, 0], dtype: 'float32', shape: [2, 2] },
          }),
        ],
        'ppo',
        10,
      ),
    'data[0].loss_fn_inputs.target_tokens: ppo takes 1-D targets [N]; [N, K] targets are for cross_entropy',
  );
  fails(
    () =>
      parseDatums(
        [datum([1, 2], { target_tokens: ints([2, 3]), weights: { data: [1, 1, 1, 1], dtype: 'float32', shape: [2, 2] } })],
        'cross_entropy',
        10,
      ),
    'data[0].loss_fn_inputs.weights: shape [2, 2] differs from target_tokens [2]',
  );
});
