/**
 * Text to train a world's tokenizer on: the documents and questions, plus the strings an agent
 * reads and writes around them — role prompts, the chat template's tools section with the
 * search/open/delegate specs, tool calls, search result listings, opened pages, subtasks and worker
 * summaries — so the merges cover the whole conversation, not only the encyclopedia.
 * `trainTokenizerForWorld` trains on them and reports tokens per document.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHAT_TEMPLATE, createChatTokenizer, trainWorldTokenizer, type TrainedTokenizer } from './tokenizer-train.ts';
import { Template } from '@huggingface/jinja';
import { nounPhrase, toolCallText, workerSummaryText } from './expert.ts';
import { SUBTASK_TEMPLATES, extractFacts, splitSentences } from './world/vocab.ts';
import type { World } from './world/world.ts';
import { formatHits, formatPage } from '../tools/search/search-index.ts';
import type { ChatTokenizer } from '../core/chat.ts';
import { worldSearchTools, worldToolSpecs } from './world-tools.ts';

const PROMPTS_DIR = fileURLToPath(new URL('../../prompts/', import.meta.url));

export interface WorldTokenizerTextOptions {
  /** Questions whose conversation pieces are included. Default 400. */
  maxQuestions?: number;
  /**
   * Times the fixed texts (role prompts, the tools section) are counted: they open every sequence,
   * so their merges pay off far more than one document's. Default 20.
   */
  fixedTextWeight?: number;
}

export function worldTokenizerTexts(world: World, options: WorldTokenizerTextOptions = {}): string[] {
  const texts: string[] = [];
  const fixed: string[] = [];
  for (const d of world.documents) texts.push(d.text, d.title);
  for (const q of world.questions) texts.push(q.question);
  // Role prompts (the repository's prompts/ directory, when present).
  if (existsSync(PROMPTS_DIR))
    for (const f of readdirSync(PROMPTS_DIR)
      .filter((f) => f.endsWith('.md'))
      .sort())
      fixed.push(readFileSync(join(PROMPTS_DIR, f), 'utf8'));
  // The chat template's tool section for each role.
  const { index, tools } = worldSearchTools(world, { noise: 0 });
  const specs = worldToolSpecs(tools);
  const template = new Template(CHAT_TEMPLATE);
  for (const tools of [specs.planner, specs.worker]) {
    fixed.push(
      template.render({
        messages: [
          { role: 'system', content: 'x' },
          { role: 'user', content: 'y' },
        ],
        tools,
        add_generation_prompt: true,
      }),
    );
  }
  for (let k = 0; k < (options.fixedTextWeight ?? 20); k++) texts.push(...fixed);
  // Conversation pieces along the gold chains.
  const docs = new Map(world.documents.map((d) => [d.id, d]));
  for (const q of world.questions.slice(0, options.maxQuestions ?? 400)) {
    for (const step of q.chain) {
      const np = nounPhrase(step.relation, step.subject);
      for (const t of SUBTASK_TEMPLATES) texts.push(toolCallText('delegate_subtask', { subtask: t.replace('{np}', np) }));
      texts.push(toolCallText('search', { query: step.subject }), toolCallText('open', { id: step.docId }));
      const doc = docs.get(step.docId)!;
      texts.push(formatPage(index.open(doc.id)));
      const hits = index.search(step.subject, 5);
      texts.push(formatHits(step.subject, hits));
      const other = hits.find((h) => h.title !== step.subject)?.title;
      const sentence = extractFactSentence(doc.text, step.relation);
      texts.push(workerSummaryText({ np, value: step.object, docId: doc.id, title: doc.title, sentence, other }));
      texts.push(`${np.charAt(0).toUpperCase() + np.slice(1)} is ${step.object}.`);
    }
    texts.push(`The answer is \\boxed{${q.answers[0]}}.`);
  }
  return texts;
}

function extractFactSentence(text: string, relation: string): string | undefined {
  const fact = extractFacts(text, relation)[0];
  return fact ? splitSentences(text).find((x) => x.includes(fact.subject) && x.includes(fact.object)) : undefined;
}

export function trainTokenizerForWorld(
  world: World,
  vocabSize = 2048,
): { trained: TrainedTokenizer; tokenizer: ChatTokenizer; tokensPerDocument: { mean: number; max: number } } {
  return trainTokenizerForWorlds([world], vocabSize);
}

/**
 * One tokenizer for many worlds: trained on every world's texts (each world's conversation pieces
 * from its first ⌈400 / worlds⌉ questions, so the training text stays the size of one world's),
 * so a model built on it reads any world generated with the same knobs — names of a world it never
 * saw split into the syllable pieces all worlds share. Tokens per document are over all the worlds.
 */
export function trainTokenizerForWorlds(
  worlds: readonly World[],
  vocabSize = 2048,
): { trained: TrainedTokenizer; tokenizer: ChatTokenizer; tokensPerDocument: { mean: number; max: number } } {
  const maxQuestions = Math.ceil(400 / Math.max(1, worlds.length));
  const texts = worlds.flatMap((w) => worldTokenizerTexts(w, worlds.length > 1 ? { maxQuestions } : {}));
  const trained = trainWorldTokenizer(texts, { vocabSize });
  const tokenizer = createChatTokenizer(trained.tokenizerJson, trained.tokenizerConfig);
  const counts = worlds.flatMap((w) => w.documents.map((d) => tokenizer.encode(d.text).length));
  return {
    trained,
    tokenizer,
    tokensPerDocument: { mean: counts.reduce((a, b) => a + b, 0) / Math.max(1, counts.length), max: Math.max(0, ...counts) },
  };
}
