import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTranscripts, scheduledLr, trainSft } from './sft.ts';
import { renderConversation } from '../agents/renderer.ts';
import { BigramPolicy } from '../testing/bigram-policy.ts';
import type { ChatMessage, ChatTokenizer } from '../core/chat.ts';

/** A character-level tokenizer with a ChatML-like template: "<role>content|" per message, "<assistant>" as generation prompt. */
function charTokenizer(): ChatTokenizer {
  const alphabet = [...'<>|abcdefghijklmnopqrstuvwxyz0123456789 ?.'];
  return {
    vocabSize: alphabet.length,
    stopTokenIds: [alphabet.indexOf('|')],
    bosTokenId: null,
    eosTokenId: alphabet.indexOf('|'),
    encode: (t) =>
      [...t].map((c) => {
        const i = alphabet.indexOf(c);
        if (i < 0) throw new Error(`bad char ${c}`);
        return i;
      }),
    decode: (ids) => ids.map((i) => alphabet[i]).join(''),
    tokenToId: (t) => (alphabet.includes(t) ? alphabet.indexOf(t) : undefined),
    idToToken: (i) => alphabet[i],
    applyChatTemplate: (messages, options) =>
      messages.map((m) => `<${m.role}>${m.content}|`).join('') + (options?.addGenerationPrompt ? '<assistant>' : ''),
  };
}

/**
 * The bigram vocabulary has no chat template or end-of-turn token: render each message's tokens in
 * order, trainable on assistant messages only.
 */
function renderBigram(t: ChatTokenizer, messages: readonly ChatMessage[]) {
  const tokens: number[] = [];
  const mask: number[] = [];
  for (const m of messages) {
    for (const id of t.encode(m.content)) {
      tokens.push(id);
      mask.push(m.role === 'assistant' ? 1 : 0);
    }
  }
  return { tokens, mask };
}

test('renderConversation masks exactly the assistant content and its end marker', () => {
  const tok = charTokenizer();
  const msgs: ChatMessage[] = [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: 'q1' },
    { role: 'assistant', content: 'a1' },
    { role: 'tool', content: 'r' },
    { role: 'assistant', content: 'b2' },
  ];
  const r = renderConversation(tok, msgs);
  const text = tok.decode(r.tokens);
  assert.equal(text, '<system>be brief|<user>q1|<assistant>a1|<tool>r|<assistant>b2|');
  const trained = r.tokens
    .filter((_, i) => r.mask[i])
    .map((t) => tok.decode([t]))
    .join('');
  assert.equal(trained, 'a1|b2|');
});

test('readTranscripts names file, line and field on bad input', () => {
  const dir = mkdtempSync(join(tmpdir(), 'matpo-sft-'));
  const f = join(dir, 't.jsonl');
  writeFileSync(f, '{"messages":[{"role":"user","content":"x"}]}\n{"messages":[{"role":"robot","content":"x"}]}\n');
  assert.throws(
    () => readTranscripts(f),
    (e: unknown) =>
      e instanceof Error && e.message === `${f}:2: field "messages[0]": expected {role: system|user|assistant|tool, content: string}`,
  );
  writeFileSync(f, '{"messages":[]}\n');
  assert.throws(() => readTranscripts(f), /t\.jsonl:1: field "messages": expected a non-empty array/);
  writeFileSync(f, 'nope\n');
  assert.throws(() => readTranscripts(f), /t\.jsonl:1: invalid JSON/);
});

test('SFT on demonstrations lowers the held-out loss, training only assistant tokens', async () => {
  // The bigram vocabulary: user says "t0 t(8+k)", the assistant answers "t(1+k%5) t7".
  const transcripts = Array.from({ length: 40 }, (_, i) => {
    const k = i % 8;
    return {
      messages: [
        { role: 'user', content: `t0 t${8 + k}` },
        { role: 'assistant', content: `t${1 + (k % 5)} t7` },
      ] as ChatMessage[],
    };
  });
  const policy = new BigramPolicy(16);
  const tok = await policy.tokenizer();
  const r = await trainSft(policy, tok, transcripts, renderBigram, {
    epochs: 4,
    learningRate: 0.1,
    batchTokens: 24,
    microBatchTokens: 8,
    evalFraction: 0.2,
    seed: 1,
    maxGradNorm: 1,
    maxTokens: 0,
    progress: false,
    log: () => {},
  });
  assert.equal(r.heldOutExamples, 8);
  assert.equal(r.trainExamples, 32);
  assert.equal(r.heldOutLoss.length, 5);
  // uniform start: NLL = ln 16 = 2.7726 per token
  assert.ok(Math.abs(r.heldOutLoss[0] - Math.log(16)) < 1e-6);
  assert.ok(r.heldOutLoss[4] < 0.5 * r.heldOutLoss[0], `held-out ${r.heldOutLoss.join(', ')}`);
  // user tokens are never targets: row t0 only ever predicts the user token t(8+k), so it stays
  // untouched (were user tokens trained, W[t0, t8..t15] would move)
  for (let j = 0; j < 16; j++) assert.equal(policy.W[0 * 16 + j], 0);
});

/** Ten one-token exchanges over the bigram vocabulary: token i answered by token 4 + i (i = 0…3). */
function pairTranscripts() {
  return Array.from({ length: 10 }, (_, i) => ({
    messages: [
      { role: 'user', content: `t${i % 4}` },
      { role: 'assistant', content: `t${4 + (i % 4)}` },
    ] as ChatMessage[],
  }));
}

test('learning-rate schedules: warm-up, then constant, linear or cosine decay', async () => {
  // 11 steps, 2 of warm-up, peak 1; after warm-up p = (step - 3) / 8
  assert.equal(scheduledLr(1, 1, 11, 2, 'cosine'), 0.5);
  assert.equal(scheduledLr(1, 2, 11, 2, 'cosine'), 1);
  assert.equal(scheduledLr(1, 3, 11, 2, 'cosine'), 1);
  assert.equal(scheduledLr(1, 7, 11, 2, 'constant'), 1);
  // cosine: 0.1 + 0.45 (1 + cos(pi p))
  assert.ok(Math.abs(scheduledLr(1, 7, 11, 2, 'cosine') - 0.55) < 1e-12); // p = 1/2
  assert.ok(Math.abs(scheduledLr(1, 11, 11, 2, 'cosine') - 0.1) < 1e-12); // p = 1
  assert.ok(Math.abs(scheduledLr(1, 7, 11, 2, 'linear') - (0.5 + 0.0005)) < 1e-12);
  // no warm-up: the first step runs at the peak
  assert.equal(scheduledLr(2, 1, 10, 0, 'cosine'), 2);

  // trainSft applies it step by step
  const transcripts = pairTranscripts();
  const policy = new BigramPolicy(8);
  const tok = await policy.tokenizer();
  const lrs: number[] = [];
  await trainSft(policy, tok, transcripts, renderBigram, {
    epochs: 2,
    learningRate: 0.4,
    schedule: 'linear',
    warmupFraction: 0.25,
    batchTokens: 4,
    microBatchTokens: 4,
    evalFraction: 0,
    seed: 1,
    maxGradNorm: 0,
    maxTokens: 0,
    progress: false,
    log: () => {},
    onStep: (m) => lrs.push(m.learningRate),
  });
  // 10 two-token transcripts, 2 per batch: 5 steps an epoch, 10 in all, round(2.5) = 3 of warm-up
  assert.equal(lrs.length, 10);
  assert.deepEqual(
    lrs.slice(0, 3).map((x) => +x.toFixed(12)),
    [0.4 / 3, 0.8 / 3, 0.4].map((x) => +x.toFixed(12)),
  );
  assert.equal(lrs[3], 0.4);
  for (let i = 4; i < 10; i++) assert.ok(lrs[i] < lrs[i - 1], `decreasing: ${lrs.join(', ')}`);
  assert.ok(Math.abs(lrs[9] - 0.4 * 1e-3) < 1e-12);
});

test('maxSteps stops training within an epoch, and the schedule spans the limited steps', async () => {
  const transcripts = pairTranscripts();
  const run = async (maxSteps: number) => {
    const policy = new BigramPolicy(8);
    const lrs: number[] = [];
    const r = await trainSft(policy, await policy.tokenizer(), transcripts, renderBigram, {
      epochs: 2,
      maxSteps,
      learningRate: 0.4,
      schedule: 'linear',
      warmupFraction: 0.25,
      batchTokens: 4,
      microBatchTokens: 4,
      evalFraction: 0.2,
      seed: 1,
      maxGradNorm: 0,
      maxTokens: 0,
      progress: false,
      log: () => {},
      onStep: (m) => lrs.push(m.learningRate),
    });
    return { r, lrs };
  };
  // 8 training transcripts, 2 per batch: 4 steps an epoch, 8 planned; a limit of 3 stops in epoch 1
  const { r, lrs } = await run(3);
  assert.equal(r.steps, 3);
  assert.equal(r.trainLoss.length, 1);
  assert.equal(r.heldOutLoss.length, 2, 'held-out loss before, and after the partial epoch');
  // round(3 × 0.25) = 1 warm-up step at the peak, then linear decay reaching the floor at step 3
  assert.deepEqual(lrs, [0.4, 0.4, 0.4 * 1e-3]);
  // a limit beyond the planned steps changes nothing
  const all = await run(100);
  assert.equal(all.r.steps, 8);
  assert.deepEqual(all.lrs, (await run(0)).lrs);
});

test('targetHeldOutLoss: another warm-restarted cycle while the held-out loss stays above it, up to maxCycles', async () => {
  const transcripts = pairTranscripts();
  const run = async (targetHeldOutLoss: number, maxCycles: number, evalFraction = 0.2) => {
    const policy = new BigramPolicy(8);
    const lrs: number[] = [];
    const lines: string[] = [];
    const r = await trainSft(policy, await policy.tokenizer(), transcripts, renderBigram, {
      epochs: 4,
      maxSteps: 3,
      targetHeldOutLoss,
      maxCycles,
      learningRate: 0.4,
      schedule: 'linear',
      warmupFraction: 0.25,
      batchTokens: 4,
      microBatchTokens: 4,
      evalFraction,
      seed: 1,
      maxGradNorm: 0,
      maxTokens: 0,
      progress: false,
      log: (l) => lines.push(l),
      onStep: (m) => lrs.push(m.learningRate),
    });
    return { r, lrs, lines };
  };
  const cycle = [0.4, 0.4, 0.4 * 1e-3];
  // off: one cycle of 3 steps, as without the option
  const off = await run(0, 3);
  assert.equal(off.r.cycles, 1);
  assert.deepEqual(off.lrs, cycle);
  const before = off.r.heldOutLoss[0];
  const after1 = off.r.heldOutLoss.at(-1)!;
  assert.ok(after1 < before, `the held-out loss falls: ${before} → ${after1}`);
  // reached after the first cycle: nothing more
  const reached = await run(after1 + 1e-9, 3);
  assert.equal(reached.r.steps, 3);
  assert.equal(reached.r.cycles, 1);
  // out of reach: three cycles of 3 steps (4 steps an epoch, so cycles cross epochs), each with its
  // own warm-up and decay, a held-out loss at the end of each, and a line saying the target was missed
  const missed = await run(1e-9, 3);
  assert.equal(missed.r.steps, 9);
  assert.equal(missed.r.cycles, 3);
  assert.deepEqual(missed.lrs, [...cycle, ...cycle, ...cycle]);
  assert.deepEqual(
    missed.lines.filter((l) => /another cycle|still above/.test(l)).map((l) => l.replace(/loss [\d.]+/, 'loss X')),
    [
      'sft: held-out loss X is above the target 1e-9: another cycle of 3 steps (2/3)',
      'sft: held-out loss X is above the target 1e-9: another cycle of 3 steps (3/3)',
      'sft: held-out loss X is still above the target 1e-9 after 3 cycle(s) of 3 steps',
    ],
  );
  // the first cycle is the same training whatever comes after it
  assert.equal(missed.r.heldOutLoss[1], after1);
  // held-out losses: before; end of cycle 1 (step 3); epoch 1's end (4); end of cycle 2 (6); epoch 2's end (8); end of cycle 3 (9)
  assert.equal(missed.r.heldOutLoss.length, 6);
  // a target between the first and second cycles' losses stops after the second
  const after2 = missed.r.heldOutLoss[3];
  assert.ok(after2 < after1, `the second cycle lowers the held-out loss: ${after1} → ${after2}`);
  const second = await run((after1 + after2) / 2, 3);
  assert.equal(second.r.cycles, 2);
  assert.equal(second.r.steps, 6);
  // a target needs held-out transcripts to measure it against
  await assert.rejects(run(0.5, 2, 0), /sft\.targetHeldOutLoss.*held-out/);
});
