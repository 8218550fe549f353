// The rollout browser: a step's questions → the G rollouts of one question sorted by reward → the
// planner transcript, where each delegate call expands into the worker transcript it spawned
// (nested), with tool calls and results, reward parts, advantage and token counts. Each sequence
// also has a token view colouring trainable (mask 1) and masked (mask 0) tokens: token pieces when
// the server found the run's tokenizer, otherwise the turn texts split at the recorded boundaries.
import { h, fmt, ms, getJson } from './util.js';

const enc = encodeURIComponent;

function rewardChips(reward, advantage) {
  const chips = [];
  if (reward) {
    chips.push(h('span.chip.total', { title: 'total reward' }, `reward ${fmt(reward.total)}`));
    for (const [k, v] of Object.entries(reward)) if (k !== 'total') chips.push(h('span.chip', null, `${k} ${fmt(v)}`));
  }
  if (typeof advantage === 'number')
    chips.push(
      h(
        `span.chip.adv.${advantage >= 0 ? 'pos' : 'neg'}`,
        { title: 'advantage' },
        `advantage ${advantage >= 0 ? '+' : ''}${fmt(advantage)}`,
      ),
    );
  return chips;
}

function stepSummary(questions) {
  const all = questions.flatMap((q) => q.rollouts);
  const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
  const rewards = all.flatMap((r) => (r.reward ? [r.reward.total] : []));
  const acc = all.flatMap((r) => (r.reward ? [r.reward.accuracy] : []));
  return h(
    'div.meta.step-summary',
    null,
    `${questions.length} questions · ${all.length} rollouts · mean reward ${fmt(mean(rewards))} · accuracy ${fmt(mean(acc))} · ` +
      `${fmt(mean(all.map((r) => r.workers)))} workers per rollout`,
  );
}

function rewardBar(value) {
  const v = typeof value === 'number' ? Math.max(0, Math.min(1, value)) : 0;
  return h('span.bar', { title: fmt(value) }, h('span.fill', { style: { width: `${Math.round(v * 100)}%` } }));
}

/**
 * Render a step's records into `root` for route { run, step, qid, rid }. `kind` is 'rollouts'
 * (training rollouts) or 'eval' (evaluation rollouts, same records; other eval records as a table).
 */
export async function renderRollouts(root, runs, route, go, kind = 'rollouts') {
  const stepsOf = (r) => (kind === 'eval' ? r.evalSteps : r.rolloutSteps);
  const run = runs.find((r) => r.name === route.run) ?? runs.find((r) => stepsOf(r).length) ?? runs[0];
  if (!run) return root.replaceChildren(h('p.empty', null, 'No runs.'));
  const steps = stepsOf(run);
  const toolbar = h(
    'div.toolbar',
    null,
    h(
      'label',
      null,
      'run ',
      h(
        'select#run-select',
        { onchange: (e) => go(`#/${kind}/${enc(e.target.value)}`) },
        runs.map((r) => h('option', { value: r.name, selected: r.name === run.name }, r.name)),
      ),
    ),
    steps.length
      ? h(
          'label',
          null,
          ' step ',
          h(
            'select#step-select',
            { onchange: (e) => go(`#/${kind}/${enc(run.name)}/${e.target.value}`) },
            steps.map((s) => h('option', { value: s, selected: s === Number(route.step ?? steps[steps.length - 1]) }, s)),
          ),
        )
      : null,
  );
  if (!steps.length)
    return root.replaceChildren(
      toolbar,
      h('p.empty', null, `No ${kind === 'eval' ? 'eval records' : 'rollouts'} recorded yet for ${run.name} (${kind}/step-*.jsonl).`),
    );
  const step = route.step !== undefined && steps.includes(Number(route.step)) ? Number(route.step) : steps[steps.length - 1];
  const api = `/api/runs/${enc(run.name)}/${kind}/${step}`;
  const fileName = `step-${String(step).padStart(6, '0')}.jsonl`;
  toolbar.append(h('a.raw', { href: `/files/${enc(run.name)}/${kind}/${fileName}`, target: '_blank' }, `${kind}/${fileName}`));
  const data = await getJson(api);
  if (data.questions === null) return root.replaceChildren(toolbar, recordTable(data.records, data.errors));
  const qid = route.qid ?? data.questions[0]?.questionId;
  const group = data.questions.find((q) => q.questionId === qid);
  const base = `#/${kind}/${enc(run.name)}/${step}`;

  const qList = h(
    'div.pane.questions',
    null,
    h('h2', null, `Questions · ${kind === 'eval' ? 'eval at ' : ''}step ${step}`),
    stepSummary(data.questions),
    data.errors.length
      ? h(
          'div.errors',
          null,
          data.errors.map((e) => h('div', null, e)),
        )
      : null,
    data.questions.map((q) =>
      h(
        `a.qitem${q.questionId === qid ? '.selected' : ''}`,
        { href: `${base}/${enc(q.questionId)}`, 'data-qid': q.questionId },
        h('div.qtext', null, q.question),
        h(
          'div.meta',
          null,
          h('span.mono', null, q.questionId),
          ` · ${q.rollouts.length} rollouts · mean reward ${fmt(q.meanReward)} · accuracy ${fmt(q.meanAccuracy)}`,
        ),
        h(
          'div.minibars',
          null,
          q.rollouts.map((r) => rewardBar(r.reward?.total)),
        ),
      ),
    ),
  );

  const rList = h('div.pane.rollouts');
  if (group) {
    rList.append(
      h('h2', null, 'Rollouts by reward'),
      h(
        'div.gold',
        null,
        'gold: ',
        group.goldAnswers.map((g, i) => [i ? ', ' : '', h('b', null, g)]),
      ),
      ...group.rollouts.map((r, rank) =>
        h(
          `a.ritem${r.id === route.rid ? '.selected' : ''}`,
          { href: `${base}/${enc(group.questionId)}/${enc(r.id)}`, 'data-rid': r.id },
          h(
            'div.rhead',
            null,
            h('span.rank', null, `#${rank + 1}`),
            h('span.mono', null, `rollout ${r.index}`),
            rewardBar(r.reward?.total),
            h('b', null, fmt(r.reward?.total)),
          ),
          h(
            'div.answer',
            null,
            'answer: ',
            h('b', { class: r.reward?.accuracy === 1 ? 'ok' : 'bad' }, r.answer ?? '(none)'),
            r.outcome !== 'answered' ? h('span.chip.warn', null, r.outcome) : null,
          ),
          h('div.chips', null, rewardChips(r.reward, r.advantage)),
          h(
            'div.meta',
            null,
            `${r.workers} worker${r.workers === 1 ? '' : 's'} · ${r.turns} ${r.mode === 'single' ? '' : 'planner '}turns · ` +
              `${r.toolCalls} tool calls · ${r.trainableTokens}/${r.tokens} tokens trainable · ${ms(r.timings?.totalMs)}`,
          ),
        ),
      ),
    );
  }

  const detail = h('div.pane.detail');
  root.replaceChildren(toolbar, h('div.browser', null, qList, rList, detail));
  if (route.rid) {
    detail.append(h('p.empty', null, 'Loading…'));
    const { rollout, pieces, tokenizer, tokenizerError } = await getJson(`${api}/${enc(route.rid)}`);
    detail.replaceChildren(renderRollout(rollout, pieces, tokenizer, tokenizerError));
  } else {
    detail.append(h('p.empty', null, group ? 'Pick a rollout to see its transcript.' : 'Pick a question.'));
  }
}

function renderRollout(r, pieces, tokenizer, tokenizerError) {
  const workers = new Map((r.workers ?? []).map((w) => [w.id, w]));
  const correct = r.reward?.accuracy === 1;
  return h(
    'div.rollout',
    { 'data-rollout': r.id },
    h('h2', null, `Rollout ${r.index} · ${r.mode}`),
    h('div.question', null, r.question),
    h(
      'div.answer',
      null,
      'answer: ',
      h('b', { class: correct ? 'ok' : 'bad' }, r.answer ?? '(none)'),
      ' · gold: ',
      (r.goldAnswers ?? []).join(' | '),
      r.outcome !== 'answered' ? h('span.chip.warn', null, r.outcome) : null,
    ),
    r.error ? h('div.errors', null, r.error) : null,
    h('div.chips', null, rewardChips(r.reward, r.advantage)),
    h(
      'div.meta',
      null,
      `total ${ms(r.timings?.totalMs)} · sampling ${ms(r.timings?.sampleMs)} · tools ${ms(r.timings?.toolMs)} · ` +
        `token view: ${tokenizer ? `decoded with ${tokenizer}` : 'turn texts (no tokenizer.json found)'}`,
    ),
    tokenizerError ? h('div.errors', null, `tokenizer: ${tokenizerError}`) : null,
    renderSequence(r.root, workers, pieces, 0),
  );
}

function countMask(seq) {
  let n = 0;
  for (const m of seq.mask ?? []) n += m === 1 ? 1 : 0;
  return n;
}

function renderSequence(seq, workers, pieces, depth) {
  const body = h('div.seq-body');
  const tokenBody = h('div.seq-tokens', { hidden: true });
  let tokensBuilt = false;
  const showTokens = (on) => {
    if (on && !tokensBuilt) {
      tokenBody.append(renderTokens(seq, pieces?.[seq.id]));
      tokensBuilt = true;
    }
    tokenBody.hidden = !on;
    body.hidden = on;
    bT.classList.toggle('on', !on);
    bK.classList.toggle('on', on);
  };
  const bT = h('button.on', { onclick: () => showTokens(false) }, 'transcript');
  const bK = h('button.tokens-toggle', { onclick: () => showTokens(true) }, 'tokens');
  const head = h(
    'div.seq-head',
    null,
    h(`span.role.${seq.role}`, null, seq.role),
    h('span.mono', null, seq.id),
    h('span', null, `${seq.outcome}`),
    h('span', null, `format ${fmt(seq.formatScore)}`),
    h('span', null, `${countMask(seq)}/${seq.tokens?.length ?? 0} tokens trainable`),
    h('span', null, `${seq.turns?.length ?? 0} turns`),
    seq.droppedTurns ? h('span.chip.warn', null, `${seq.droppedTurns} turns dropped`) : null,
    h('span.toggle', null, bT, bK),
  );
  if (seq.error) body.append(h('div.errors', null, seq.error));
  const msgs = seq.messages ?? [];
  const firstAssistant = msgs.findIndex((m) => m.role === 'assistant');
  for (const m of msgs.slice(0, firstAssistant < 0 ? msgs.length : firstAssistant)) {
    if (m.role === 'system') body.append(h('details.msg.system', null, h('summary', null, 'system prompt'), h('pre', null, m.content)));
    else
      body.append(
        h(
          `div.msg.${m.role}`,
          null,
          h('div.who', null, m.role === 'user' && seq.role === 'worker' ? 'task' : m.role),
          h('pre', null, m.content),
        ),
      );
  }
  (seq.turns ?? []).forEach((t, i) => {
    body.append(
      h(
        'div.turn',
        { 'data-turn': i },
        h(
          'div.who',
          null,
          `turn ${i + 1} · ${seq.role}`,
          h(
            'span.meta',
            null,
            ` ${t.end - t.sampleStart} sampled · ${t.sampleStart - t.promptStart} prompt tokens · ${t.finishReason} · ${ms(t.ms)}`,
          ),
        ),
        h('pre.sampled', null, t.text),
        (t.toolCalls ?? []).map((c) => renderToolCall(c, workers, pieces, depth)),
      ),
    );
  });
  const el = h(`div.seq.depth-${Math.min(depth, 3)}`, { 'data-seq': seq.id }, head, body, tokenBody);
  return el;
}

function renderToolCall(c, workers, pieces, depth) {
  const worker = c.workerId ? workers.get(c.workerId) : undefined;
  const args = c.arguments === null || c.arguments === undefined ? c.raw : JSON.stringify(c.arguments, null, 1);
  return h(
    `div.tool${c.valid ? '' : '.invalid'}`,
    { 'data-tool': c.name },
    h(
      'div.tool-head',
      null,
      h('span.tool-name', null, c.name),
      c.valid ? null : h('span.chip.warn', null, 'invalid'),
      c.ms !== undefined ? h('span.meta', null, ms(c.ms)) : null,
    ),
    h('pre.args', null, args),
    c.error ? h('div.tool-error', null, c.error) : null,
    c.result !== undefined
      ? h(
          'details.result',
          { open: !worker && c.result.length < 400 },
          h('summary', null, `result · ${c.result.length} chars`),
          h('pre', null, c.result),
        )
      : null,
    worker
      ? h(
          'details.worker',
          { 'data-worker': worker.id },
          h(
            'summary',
            null,
            `worker transcript · ${worker.id} · ${worker.outcome} · ${worker.turns?.length ?? 0} turns · ` +
              `${countMask(worker)}/${worker.tokens?.length ?? 0} tokens trainable`,
          ),
          renderSequence(worker, workers, pieces, depth + 1),
        )
      : c.workerId
        ? h('div.tool-error', null, `worker ${c.workerId} is not in this rollout`)
        : null,
  );
}

/** Token view: decoded pieces coloured by mask, or turn texts split at promptStart/sampleStart/end. */
function renderTokens(seq, pieces) {
  const tokens = seq.tokens ?? [];
  const mask = seq.mask ?? [];
  const logprobs = seq.logprobs ?? [];
  const legend = h(
    'div.token-legend',
    null,
    h('span.tok.m1', null, 'trainable (mask 1)'),
    h('span.tok.m0', null, 'masked (mask 0)'),
    ` ${countMask(seq)} of ${tokens.length} tokens trainable`,
  );
  if (pieces && pieces.length === tokens.length) {
    const box = h('div.token-box.decoded');
    const frag = document.createDocumentFragment();
    for (let i = 0; i < tokens.length; i++) {
      const p = pieces[i];
      const title = `#${i} id ${tokens[i]} mask ${mask[i]}${mask[i] === 1 ? ` logprob ${fmt(logprobs[i])}` : ''}`;
      const shown = p.replace(/\n/g, '↵\n').replace(/\t/g, '⇥');
      // '' is a token that ends inside a character; the token completing it shows the character.
      frag.append(h(`span.tok.m${mask[i] === 1 ? 1 : 0}${shown === '' ? '.empty' : ''}`, { title }, shown));
    }
    box.append(frag);
    return h('div', null, legend, box);
  }
  // No tokenizer: show what the turns recorded. Prompt spans come from the messages between turns.
  const msgs = seq.messages ?? [];
  const box = h('div.token-box.spans');
  let mi = 0;
  (seq.turns ?? []).forEach((t, i) => {
    const prompt = [];
    while (mi < msgs.length && msgs[mi].role !== 'assistant') prompt.push(msgs[mi++]);
    if (mi < msgs.length) mi++; // this turn's own assistant message
    const nPrompt = t.sampleStart - t.promptStart;
    const nSample = t.end - t.sampleStart;
    const sampleMask = mask.slice(t.sampleStart, t.end).filter((m) => m === 1).length;
    box.append(
      h(
        'div.span.m0',
        { title: `tokens [${t.promptStart}, ${t.sampleStart}) mask 0` },
        h('div.span-label', null, `turn ${i + 1} prompt · ${nPrompt} tokens [${t.promptStart}, ${t.sampleStart})`),
        h('pre', null, prompt.map((m) => `${m.role}${m.name ? ` (${m.name})` : ''}: ${m.content}`).join('\n\n')),
      ),
      h(
        'div.span.m1',
        { title: `tokens [${t.sampleStart}, ${t.end}) ${sampleMask} with mask 1` },
        h('div.span-label', null, `turn ${i + 1} sampled · ${nSample} tokens [${t.sampleStart}, ${t.end}) · ${sampleMask} trainable`),
        h('pre', null, t.text),
      ),
    );
  });
  // The mask itself, one cell per token.
  const strip = h('div.mask-strip', { title: 'one cell per token: green = mask 1' });
  const frag = document.createDocumentFragment();
  for (let i = 0; i < tokens.length; i++) frag.append(h(`i.m${mask[i] === 1 ? 1 : 0}`, { title: `#${i} id ${tokens[i]}` }));
  strip.append(frag);
  return h(
    'div',
    null,
    legend,
    h('div.meta', null, 'No tokenizer.json found for this run: turn texts shown at their recorded token boundaries.'),
    strip,
    box,
  );
}

/** Records that are not rollouts (e.g. per-question eval summaries), as a table of their plain fields. */
function recordTable(records, errors) {
  const cols = [];
  for (const r of records)
    for (const [k, v] of Object.entries(r))
      if (!cols.includes(k) && (v === null || typeof v !== 'object' || Array.isArray(v))) cols.push(k);
  const cell = (v) => {
    if (typeof v === 'boolean') return h(`td.${v ? 'ok' : 'bad'}`, null, v ? '✓' : '✗');
    if (Array.isArray(v)) return h('td', null, v.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x))).join(' | '));
    return h('td', null, typeof v === 'number' ? fmt(v) : (v ?? ''));
  };
  return h(
    'div',
    null,
    errors.length
      ? h(
          'div.errors',
          null,
          errors.map((e) => h('div', null, e)),
        )
      : null,
    h(
      'table.eval-table',
      null,
      h(
        'tr',
        null,
        cols.map((c) => h('th', null, c)),
      ),
      records.map((r) =>
        h(
          'tr',
          null,
          cols.map((c) => cell(r[c])),
        ),
      ),
    ),
  );
}
